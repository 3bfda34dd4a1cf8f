"""Library messages that are not the user's to fix, silenced where inkbooth uses the library.

Each entry drops one known message of one library logger, matched by its text; everything else the
library logs comes through as before. ``library_notes()`` installs them (cheap, stdlib only, once)
and is called before diffusers or optimum is imported: by ``inkbooth.dreambooth`` (diffusers in
every module), ``inkbooth.tiny``, and the OCR export and ONNX reader (optimum, which imports
diffusers). A Python warning of this kind is filtered with ``warnings.catch_warnings`` around the
call that raises it instead (``ocr.recognition.onnxfiles.export_optimum``).
"""

from __future__ import annotations

import logging
import re

# (logger, message pattern, why it is not the user's to fix)
NOTES = [
    ("diffusers.utils.import_utils", r"Multiple distributions found for package optimum\. ",
     "optimum-onnx ships the `optimum` package beside optimum itself (both are our dependencies); "
     "diffusers picks one and says so at every import"),
    ("diffusers.models.modeling_utils", r"There are modules in \w+ that should be kept in float32: \[\]\. ",
     "diffusers warns on every dtype cast, with an empty list of modules to keep in float32 (nothing to keep)"),
    # transformers' own loggers do not propagate, except where CI=true (GitHub Actions, GitLab CI):
    # there these reach the step's log as warnings.
    *((name, r"`torch_dtype` is deprecated! Use `dtype` instead!",
       "optimum's exporter and diffusers read or pass `torch_dtype`; transformers 4.57 renamed it")
      for name in ("transformers.configuration_utils", "transformers.modeling_utils")),
    *((name, r"Using a slow image processor as `use_fast` is unset",
       "the committed readers and trocr-base save a slow (PIL) image processor, which is what they are read with")
      for name in ("transformers.processing_utils", "transformers.models.auto.image_processing_auto")),
]


class _Drop(logging.Filter):
    """Drops the records whose message matches ``pattern``."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def library_notes() -> None:
    """Install the filters of ``NOTES`` on their loggers (once; later calls do nothing)."""
    for name, pattern, _why in NOTES:
        logger = logging.getLogger(name)  # the libraries' get_logger returns this same logger
        if not any(isinstance(f, _Drop) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_Drop(pattern))
