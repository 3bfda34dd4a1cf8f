"""Synthetic documents with exact ground truth: printed lines and pages with their true boxes.

Used for the parity set of an export (when no line images are given), the demo documents, the
tests and the benchmarks; ``inkbooth.ocr.training.synth`` builds its training lines on the same
fonts and texts. Pages and parity lines use Pillow's bundled FreeType font (Aileron), so they need
no system font and give the same pixels everywhere. Everything is seeded.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


DEFAULT_FONT = "default"  # Pillow's bundled font (Aileron Regular)


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


@functools.lru_cache(maxsize=256)
def load_font(spec: str, size: int) -> Any:
    """A FreeType font: ``default`` (Pillow's bundled Aileron) or the path of a .ttf/.otf file."""
    from PIL import ImageFont

    if spec == DEFAULT_FONT:
        return ImageFont.load_default(size=size)
    if not Path(spec).is_file():
        raise ValueError(f"font {spec!r}: no such file (scripts/fetch-fonts.sh fetches the Debian fonts)")
    return ImageFont.truetype(spec, size=size)


def font_identity(spec: str) -> str:
    """What a font is, for lineage: the file's SHA-256, or Pillow's version for the bundled font."""
    if spec == DEFAULT_FONT:
        import PIL

        return f"pillow-{PIL.__version__}-default"
    return hashlib.sha256(Path(spec).read_bytes()).hexdigest()


def render_line(text: str, size: int = 28, pad: int = 6, font: str = DEFAULT_FONT) -> Image.Image:
    """One line of dark text on white, cropped to the text with ``pad`` pixels around it."""
    from PIL import Image, ImageDraw

    font = load_font(font, size)
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
                max_lines: int | None = None, font: str = DEFAULT_FONT) -> SynthPage:
    """A printed page (like an A4/letter page at 200 dpi) with its true line boxes and texts."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    font = load_font(font, size)
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
