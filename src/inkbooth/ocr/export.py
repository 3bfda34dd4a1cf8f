"""The export stage under the path compiled pipelines import; it lives in ``inkbooth.ocr.recognition.export``."""

from inkbooth.ocr.recognition.export import ExportConfig as ExportConfig
from inkbooth.ocr.recognition.export import ParityError as ParityError
from inkbooth.ocr.recognition.export import export_trocr as export_trocr
