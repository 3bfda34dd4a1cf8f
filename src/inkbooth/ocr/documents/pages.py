"""Documents in: a PDF or image file becomes grayscale pages, one at a time.

A document (PNG, JPEG, TIFF with any number of pages, GIF, BMP, WebP, or PDF rendered with
pypdfium2) is recognised by its first bytes, not its name. Images are turned upright by their EXIF
orientation and reduced to 8-bit gray; PDF pages are rendered at ``pdf_dpi`` honouring ``/Rotate``,
and encrypted PDFs open with a password (``INKBOOTH_PDF_PASSWORD``). A document that cannot be
read raises ``InputError`` naming it and what is wrong. ``PagesConfig`` holds the settings of this
step and of the layout step that cuts the pages into lines (one ``pages:`` section of a config).

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from inkbooth.config import option

if TYPE_CHECKING:
    from PIL import Image


PASSWORD_ENV = "INKBOOTH_PDF_PASSWORD"


class InputError(ValueError):
    """A document cannot be read; the message names the document and what is wrong with it."""


@dataclasses.dataclass
class PagesConfig:
    """How documents become pages and pages become line crops."""

    pdf_dpi: int = option(200, "resolution at which PDF pages are rendered", min=36, max=1200)
    max_pixels: int = option(60_000_000, "largest page (width x height) accepted; bigger is refused as a "
                                         "possible decompression bomb", min=1, max=2_000_000_000)
    max_pages: int = option(2000, "most pages read from one document (the rest get a warning record)",
                            min=1, max=1_000_000)
    pdf_password: str | None = option(None, "password for encrypted PDFs (a secret: better given as the "
                                            "INKBOOTH_PDF_PASSWORD environment variable)", secret=True)
    deskew: bool = option(True, "estimate and correct small page skew")
    orientation: bool = option(True, "turn a page whose text runs up or down it (a table printed sideways) "
                                     "by a quarter turn before cutting it into lines")
    max_skew_degrees: float = option(5.0, "largest skew searched for, in degrees", min=0.0, max=45.0)
    detector: str = option("xycut", "how lines are found: 'xycut' (cuts along the ink's projection profiles) "
                                    "or 'ppocr' (PP-OCRv4's text detector; the 'detect' extra)")
    light_on_dark: bool = option(True, "find light text on dark panels (slide titles, header bands, table heads) "
                                       "and read it turned dark on light")
    min_line_height: int = option(6, "rows of ink shorter than this (pixels) are noise, not text", min=1, max=10_000)
    segment_gap: float = option(2.5, "split a line where a horizontal gap exceeds this many line heights",
                                min=0.01, max=1000.0)
    gutter: float = option(1.5, "a vertical white band this many line heights wide separates columns",
                           min=0.01, max=1000.0)
    narrow_gutter: float = option(1.0, "a narrower white band, down to this many line heights, separates two wide "
                                       "columns that are both full of lines (an index)", min=0.01, max=1000.0)
    paragraph_gap: float = option(0.8, "a blank horizontal band this many line heights tall separates blocks",
                                  min=0.01, max=1000.0)
    wide_column: float = option(10.0, "a column of text at least this many line heights wide: a narrow gutter between "
                                      "two such columns parts them even when their rows line up (a table's do not)",
                                min=0.01, max=1000.0)
    line_padding: float = option(0.15, "padding around each crop, as a fraction of the line height",
                                 min=0.0, max=10.0)

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "pages")
        if self.detector not in ("xycut", "ppocr"):
            raise ValueError(f"detector must be 'xycut' or 'ppocr', got {self.detector!r}")


@dataclasses.dataclass
class Page:
    """One page as a grayscale image."""

    index: int
    image: Image.Image
    total: int = 1  # pages in the document (some past max_pages may not be read)


# Formats recognised by their first bytes; an image signature at offset 0 wins over a "%PDF-" that
# appears later (a PNG may carry that text in a chunk; a PDF may start after up to 1 KB of junk).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a", b"BM",
                b"RIFF")


def _sniff(head: bytes) -> str:
    """``"pdf"`` or ``"image"`` from a document's first KB."""
    if head.startswith(_IMAGE_MAGIC):
        return "image"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    return "image"


def load_pages(source: bytes | str | os.PathLike[str], name: str, config: PagesConfig | None = None) -> Iterator[Page]:
    """The pages of a document, one at a time; ``source`` is its bytes or a local file, ``name`` is
    used in errors. Each page carries the document's page count (``total``): pages past
    ``max_pages`` are not read, and a caller can say so."""
    config = config or PagesConfig()
    if isinstance(source, bytes):
        empty, head = not source, source[:1024]
    else:
        try:
            with open(source, "rb") as f:
                head = f.read(1024)
        except OSError as e:
            raise InputError(f"{name}: cannot be read: {e.strerror or e}") from None
        empty = not head
    if empty:
        raise InputError(f"{name}: empty file (0 bytes)")
    if _sniff(head) == "pdf":
        yield from _pdf_pages(source, name, config)
    else:
        yield from _image_pages(source, name, config)


def _image_pages(source: bytes | str | os.PathLike[str], name: str, config: PagesConfig) -> Iterator[Page]:
    from PIL import Image, UnidentifiedImageError

    from inkbooth.imaging import upright

    # Pillow's own bomb check would warn (not refuse) below 2x its limit; we check sizes ourselves.
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image or PDF that can be read (unrecognised format)") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise InputError(f"{name}: cannot be decoded (truncated or corrupt?): {e}") from None
    with img:
        n_frames = getattr(img, "n_frames", 1)
        for i in range(min(n_frames, config.max_pages)):
            try:
                img.seek(i)
                w, h = img.size
                if w * h > config.max_pixels:
                    raise InputError(f"{name}: page {i + 1} is {w}x{h} pixels, over the limit of "
                                     f"{config.max_pixels} (max_pixels); refused as a possible decompression bomb")
                img.load()
                page = Page(i, to_gray(upright(img), f"{name} page {i + 1}"), n_frames)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001
                raise InputError(f"{name}: page {i + 1} cannot be decoded (truncated or corrupt?): {e}") from None
            yield page


def _pdf_pages(source: bytes | str | os.PathLike[str], name: str, config: PagesConfig) -> Iterator[Page]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(source if isinstance(source, bytes) else os.fspath(source),
                                 password=config.pdf_password)
    except pdfium.PdfiumError as e:
        msg = str(e)
        if "password" in msg.lower():
            if not config.pdf_password:
                raise InputError(f"{name}: PDF is encrypted; give its password (pdf_password, or the "
                                 f"{PASSWORD_ENV} environment variable)") from None
            raise InputError(f"{name}: PDF is encrypted and the password given (pdf_password, or the "
                             f"{PASSWORD_ENV} environment variable) is wrong for it; set the right one "
                             "there (one password serves a whole run: documents with another password "
                             "need a run of their own)") from None
        raise InputError(f"{name}: broken PDF: {msg}") from None
    try:
        scale = config.pdf_dpi / 72.0
        total = len(pdf)
        for i in range(min(total, config.max_pages)):
            page = pdf[i]
            # The size and the rendering both honour the page's /Rotate (inherited ones too).
            w_pt, h_pt = page.get_size()
            w, h = math.ceil(w_pt * scale), math.ceil(h_pt * scale)
            if w * h > config.max_pixels:
                raise InputError(f"{name}: page {i + 1} would render at {w}x{h} pixels, over the limit of "
                                 f"{config.max_pixels} (max_pixels); lower pdf_dpi or raise the limit")
            bitmap = page.render(scale=scale, grayscale=True)
            image = bitmap.to_pil().convert("L")
            bitmap.close()
            page.close()
            yield Page(i, image, total)
    finally:
        pdf.close()


def to_gray(img: Image.Image, name: str = "image") -> Image.Image:
    """Any Pillow mode (CMYK, 16-bit, float, palette, alpha, bilevel) to 8-bit grayscale on white."""
    from PIL import Image

    from inkbooth.imaging import DEEP_MODES, to_8bit

    mode = img.mode
    if mode in DEEP_MODES:
        return to_8bit(img, stretch=True)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if mode == "L":
        return img.copy()
    try:
        return img.convert("RGB").convert("L")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{name}: unsupported pixel mode {mode}: {e}") from None
