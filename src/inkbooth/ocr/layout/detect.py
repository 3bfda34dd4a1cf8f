"""A learned text detector as the line finder: PP-OCRv4's DB text detection model.

The model is the ONNX file that RapidOCR ships inside its PyPI wheel (``rapidocr-onnxruntime``,
Apache-2.0, installed by the ``detect`` extra); only the file is used, through the onnxruntime the
OCR extras already bring, so nothing is downloaded at run time. The network gives a text
probability map whose blobs are shrunk text lines (DB); the map is thresholded, cut into line
blobs by the same XY-cut as the ink (:func:`inkbooth.ocr.layout.segment.segment_lines`), each blob grown
back by DB's unclip distance, and the box tightened to the page's ink inside it. Each box is one
line for TrOCR.

May import ``inkbooth.ocr.documents`` and ``layout.segment``; the layout step (``layout.lines``)
chooses it, so it never imports that.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from inkbooth.ocr.documents.pages import PagesConfig
from inkbooth.ocr.layout.segment import segment_lines

if TYPE_CHECKING:
    import numpy as np

MODEL = "ch_PP-OCRv4_det_infer.onnx"
PACKAGE = "rapidocr_onnxruntime"


def model_path() -> Path:
    """The detection model inside the installed RapidOCR wheel (its package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"detector 'ppocr' needs the {PACKAGE} wheel, which ships the model: "
                           "pip install 'inkbooth[detect]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL
    if not path.is_file():
        raise RuntimeError(f"{path} missing: the installed {PACKAGE} does not ship {MODEL}")
    return path


@functools.lru_cache(maxsize=2)
def _session(threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])


def text_probability(gray: np.ndarray, scale: float, threads: int = 1) -> np.ndarray:
    """The model's text probability map of a grayscale page resized by ``scale`` (sides rounded to 32)."""
    import numpy as np
    from PIL import Image

    h, w = gray.shape
    rh, rw = max(32, round(h * scale / 32) * 32), max(32, round(w * scale / 32) * 32)
    small = np.asarray(Image.fromarray(gray).resize((rw, rh), Image.BILINEAR), dtype=np.float32)
    x = (small / 255.0 - 0.5) / 0.5  # RapidOCR's normalisation for this model
    x = np.broadcast_to(x, (1, 3, rh, rw)).astype(np.float32)
    session = _session(threads)
    return session.run(None, {session.get_inputs()[0].name: x})[0][0, 0]


def detect_lines(gray: np.ndarray, ink: np.ndarray, dpi_scale: float = 0.5, threshold: float = 0.3,
                 unclip: float = 1.6, threads: int = 1, min_line_height: int = 6) -> list[tuple[int, int, int, int]]:
    """Line boxes (page pixels) found by the detector, tightened to ``ink``, in reading order."""
    import numpy as np

    prob = text_probability(gray, dpi_scale, threads)
    mask = prob > threshold
    sy, sx = gray.shape[0] / mask.shape[0], gray.shape[1] / mask.shape[1]
    # The blobs are whole lines already (words joined): cut them apart at columns and wide gaps.
    config = PagesConfig(min_line_height=2, segment_gap=4.0)
    boxes = []
    for x0, y0, x1, y1 in segment_lines(mask, config, rules=False, pictures=False):
        w, h = x1 - x0, y1 - y0
        d = w * h * unclip / (2 * (w + h))  # DB's unclip distance for a rectangle
        gx0, gy0 = max(0, int((x0 - d) * sx)), max(0, int((y0 - d) * sy))
        gx1, gy1 = min(ink.shape[1], int((x1 + d) * sx) + 1), min(ink.shape[0], int((y1 + d) * sy) + 1)
        part = ink[gy0:gy1, gx0:gx1]
        inked = part.any(axis=1)
        # Rows joined to the blob's own rows without a blank row: the line, not its neighbours'
        # ascenders and descenders that the grown box also reaches.
        top, bottom = max(0, int(y0 * sy) - gy0), min(len(inked), int(y1 * sy) + 1 - gy0)
        if top >= bottom or not inked[top:bottom].any():
            continue
        while top > 0 and inked[top - 1]:
            top -= 1
        while bottom < len(inked) and inked[bottom]:
            bottom += 1
        cols = np.flatnonzero(part[top:bottom].any(axis=0))
        rows = np.flatnonzero(inked[top:bottom])
        boxes.append((gx0 + int(cols[0]), gy0 + top + int(rows[0]), gx0 + int(cols[-1]) + 1,
                      gy0 + top + int(rows[-1]) + 1))
    return boxes
