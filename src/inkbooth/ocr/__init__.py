"""Printed-text OCR with TrOCR, by concern; each subpackage says what it holds in its docstring.

* ``documents``: what OCR reads. PDFs and images into pages, labelled line images, synthetic
  documents with exact ground truth.
* ``layout``: pages into text-line crops (binarisation, skew, orientation, the XY-cut, the learned
  detector).
* ``recognition``: line images into text, confidences and token boxes; the ONNX export with its
  parity gate, and the decoding engine.
* ``training``: labelled and synthetic training lines, fine-tuning, evaluation, registration.
* ``batch``: documents into results, sharded and resumable (plan, shard, merge).

Imports run one way: ``layout`` may use ``documents``; ``recognition`` may use ``documents``;
``training`` and ``batch`` may use ``documents``, ``layout`` and ``recognition``, never each other;
nothing here imports upward (``tests/test_imports.py`` checks it). The modules ``export``,
``recognize``, ``lines``, ``finetune`` and ``evaluate`` beside the subpackages only re-export the
stages under the paths that compiled pipelines import.
"""
