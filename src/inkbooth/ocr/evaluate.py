"""The evaluation stage under the path compiled pipelines import; it lives in ``inkbooth.ocr.training.evaluate``."""

from inkbooth.ocr.training.evaluate import EvaluateConfig as EvaluateConfig
from inkbooth.ocr.training.evaluate import evaluate_trocr as evaluate_trocr
