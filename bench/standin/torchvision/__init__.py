"""A benchmark-only stand-in for torchvision: just the image transforms train_dreambooth.py calls.

PyPI's torchvision does not import beside the CPU build of torch 2.13.0 that this project pins
(``operator torchvision::nms does not exist``), and the reference script imports it only for
``transforms``. ``bench/dreambooth.py`` puts this folder first on ``sys.path`` for both sides of
every comparison, so both run in the same environment. It has no package metadata, so diffusers
and transformers still report torchvision as unavailable and take no torchvision code paths.
Never installed, never imported by inkbooth itself.
"""

from . import transforms  # noqa: F401

__version__ = "0.0.0+inkbooth-bench-standin"
