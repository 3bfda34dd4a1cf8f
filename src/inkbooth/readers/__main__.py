"""``python -m inkbooth.readers train NAME``."""

import sys

from inkbooth.readers import main

sys.exit(main())
