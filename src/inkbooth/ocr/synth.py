"""Synthetic printed text with exact ground truth: line images and pages with known line boxes.

Used for the parity set of an export (when no line images are given), the demo documents, the
tests and the benchmarks. Rendering uses Pillow's bundled FreeType font, so it needs no system
font and gives the same pixels everywhere. Everything is seeded.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

WORDS = (
    "invoice total amount due date page order number name address paid tax net item price quantity "
    "account bank reference balance customer delivery shipping payment terms account holder city "
    "country postal code telephone email the of and to in is for on that by with from as at"
).split()


def random_text(rng: random.Random, min_words: int = 2, max_words: int = 8) -> str:
    """A line of printed-document-like text: words, numbers and amounts."""
    parts = []
    for _ in range(rng.randint(min_words, max_words)):
        r = rng.random()
        if r < 0.65:
            w = rng.choice(WORDS)
            parts.append(w.capitalize() if rng.random() < 0.25 else w)
        elif r < 0.85:
            parts.append(str(rng.randint(1, 99999)))
        else:
            parts.append(f"{rng.randint(0, 9999)}.{rng.randint(0, 99):02d}")
    return " ".join(parts)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def render_line(text: str, size: int = 28, pad: int = 6) -> Image.Image:
    """One line of dark text on white, cropped to the text with ``pad`` pixels around it."""
    from PIL import Image, ImageDraw

    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill="black", font=font)
    return img


def line_images(n: int, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """``n`` line images with their texts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = random_text(rng)
        out.append((render_line(text, size=rng.choice((20, 24, 28, 32))), text))
    return out


@dataclasses.dataclass
class SynthLine:
    text: str
    box: tuple[int, int, int, int]  # exact ink box on the page


@dataclasses.dataclass
class SynthPage:
    image: Image.Image
    lines: list[SynthLine]


def render_page(seed: int = 0, *, columns: int = 1, size: int = 24, width: int = 1700, height: int = 2200,
                max_lines: int | None = None) -> SynthPage:
    """A printed page (like an A4/letter page at 200 dpi) with its true line boxes and texts."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    font = _font(size)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    margin, gutter = 110, 90
    col_w = (width - 2 * margin - (columns - 1) * gutter) // columns
    lines: list[SynthLine] = []
    for c in range(columns):
        x = margin + c * (col_w + gutter)
        y = margin + rng.randint(0, 20)
        while y < height - margin - 2 * size:
            text = random_text(rng)
            while font.getlength(text) > col_w and " " in text:
                text = text.rsplit(" ", 1)[0]
            draw.text((x, y), text, font=font, fill=0)
            # The exact box: the ink of this line drawn alone.
            alone = Image.new("L", (col_w + 2 * size, 3 * size), 255)
            ImageDraw.Draw(alone).text((size, size), text, font=font, fill=0)
            ys, xs = np.nonzero(np.asarray(alone) < 160)
            box = (x - size + int(xs.min()), y - size + int(ys.min()), x - size + int(xs.max()) + 1,
                   y - size + int(ys.max()) + 1)
            lines.append(SynthLine(text, box))
            if max_lines and len(lines) >= max_lines * (c + 1):
                break
            y += int(size * rng.uniform(1.5, 2.1)) + (2 * size if rng.random() < 0.1 else 0)
    return SynthPage(page, lines)
