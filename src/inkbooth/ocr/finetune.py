"""The fine-tuning and registration stages under the path compiled pipelines import; they live in
``inkbooth.ocr.training.finetune`` and ``inkbooth.ocr.training.register``."""

from inkbooth.ocr.training.finetune import FinetuneConfig as FinetuneConfig
from inkbooth.ocr.training.finetune import finetune_trocr as finetune_trocr
from inkbooth.ocr.training.register import RegisterConfig as RegisterConfig
from inkbooth.ocr.training.register import register_trocr as register_trocr
