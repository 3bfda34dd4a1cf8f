"""inkbooth: Kubeflow pipelines for DreamBooth personalisation and TrOCR printed-text OCR.

Importing the package is cheap on purpose: heavy libraries (torch, transformers, onnxruntime)
are imported inside the stage functions that need them.
"""

__version__ = "0.1.0"
