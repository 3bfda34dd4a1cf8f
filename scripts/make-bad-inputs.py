#!/usr/bin/env python3
"""Write the bad-input corpus (tests/badinputs.py) to tests/data/bad/ and list what each file must do."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.badinputs import build  # noqa: E402

target = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/bad")
for name, (kind, what) in sorted(build(target).items()):
    print(f"{name[:60]:60}  {kind}: {what}")
