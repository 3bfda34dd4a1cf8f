"""Pixels as people meant them: EXIF orientation applied, deep and float images brought to 8 bits.

Shared by document pages (``inkbooth.ocr.documents.pages``) and subject images (``inkbooth.dreambooth.train``),
so a photo taken sideways or a 16-bit scan is read the same way wherever it enters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
INT32_TOP = 2**31 - 1  # the largest value of a Pillow "I" (signed 32-bit) pixel


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF Orientation tag says a viewer shows it (a copy when turned)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        return img
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img)


def to_8bit(img: Image.Image, *, stretch: bool) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grayscale ("L"); others are returned as they are.

    Values are mapped by their type's range (16-bit: 0-65535; float: 0-1; 32-bit integers: the
    smallest of 0-255, 0-65535 or 0-2147483647 that holds them, and the signed 32-bit range when any
    is negative), or, with ``stretch``, from their own minimum to maximum (the best contrast for
    cutting text). So without ``stretch`` a uniform image keeps its tone (white only at the top of its
    range). Floats outside 0-1 have no type range and use their own (uniform ones: mid-gray). With
    ``stretch`` a uniform image is white (a blank page). Pixels that are not numbers (NaN, infinity)
    become white: one bad pixel must not decide the scale of the others.
    """
    import numpy as np
    from PIL import Image

    if img.mode not in DEEP_MODES:
        return img
    arr = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(arr)
    values = arr[finite]
    if values.size == 0:
        return Image.new("L", img.size, 255)
    if stretch:
        lo, hi = float(values.min()), float(values.max())
    elif img.mode == "F":
        lo, hi = (0.0, 1.0) if values.min() >= 0.0 and values.max() <= 1.0 else (float(values.min()), float(values.max()))
    elif img.mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    elif values.min() < 0:  # "I" is signed 32-bit
        lo, hi = -float(INT32_TOP) - 1.0, float(INT32_TOP)
    else:
        top = float(values.max())
        lo, hi = 0.0, (255.0 if top <= 255 else 65535.0 if top <= 65535 else float(INT32_TOP))
    out = np.full(arr.shape, 255.0)
    if hi > lo:
        out[finite] = (np.clip(arr[finite], lo, hi) - lo) * (255.0 / (hi - lo))
    elif not stretch:  # a uniform float outside 0-1: no range to place it in
        out[finite] = 128.0
    return Image.fromarray(np.round(out).astype(np.uint8), "L")


def grid(images: list[Image.Image], columns: int) -> Image.Image:
    """The pictures in rows of ``columns`` on white, each in a cell the size of the first."""
    import math

    from PIL import Image

    w, h = images[0].size
    sheet = Image.new("RGB", (columns * w, math.ceil(len(images) / columns) * h), "white")
    for i, img in enumerate(images):
        sheet.paste(img, ((i % columns) * w, (i // columns) * h))
    return sheet
