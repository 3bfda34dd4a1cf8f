"""The line-preparation stage under the path compiled pipelines import; it lives in ``inkbooth.ocr.training.lines``."""

from inkbooth.ocr.training.lines import LinesConfig as LinesConfig
from inkbooth.ocr.training.lines import prepare_lines as prepare_lines
