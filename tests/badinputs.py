"""The bad-input corpus: files a batch OCR job meets in the wild, each with what must happen to it.

``build(folder)`` writes the corpus and returns {file name: expectation}; an expectation is either
("lines", n) for a file that must be read, or ("error", text) for one that must become an error
record whose message names the file and contains ``text``. `scripts/make-bad-inputs.py` writes it
to tests/data/bad/ for people to look at; the tests build their own copy.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from inkbooth.ocr.documents import synthetic


def _page(seed: int, lines: int) -> tuple[Image.Image, int]:
    page = synthetic.render_page(seed=seed, max_lines=lines, width=800, height=220 + 60 * lines)
    return page.image, len(page.lines)


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def build(folder: str | Path) -> dict[str, tuple[str, object]]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, tuple[str, object]] = {}

    def put(name: str, data: bytes, expectation: tuple[str, object]) -> None:
        (folder / name).write_bytes(data)
        expect[name] = expectation

    img, n = _page(1, 3)
    good = _png(img)
    put("zero-byte.png", b"", ("error", "empty file"))
    put("truncated.png", good[: len(good) // 2], ("error", "cannot be decoded"))
    put("truncated.jpg", _jpeg(img)[:400], ("error", "cannot be decoded"))
    put("text-named.png", b"Dear customer,\nthis is not an image.\n", ("error", "unrecognised format"))
    put("png-named.pdf", good, ("lines", n))  # the bytes decide, not the name
    put("cmyk.tiff", _encode(img.convert("RGB").convert("CMYK"), "TIFF"), ("lines", n))
    put("16bit.png", _png(Image.fromarray(np.asarray(img).astype(np.uint16) * 257)), ("lines", n))
    put("palette.png", _png(img.convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=16)), ("lines", n))
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray(((np.asarray(img) < 128) * 255).astype(np.uint8)))
    put("alpha.png", _png(rgba), ("lines", n))
    bomb = Image.new("1", (20_000, 20_000), 1)  # 400 megapixels that compress to a few kilobytes
    put("bomb.png", _png(bomb, optimize=True), ("error", "decompression bomb"))
    first, n1 = _page(2, 2)
    second, n2 = _page(3, 4)
    put("multipage.tiff", _encode(first, "TIFF", save_all=True, append_images=[second]), ("lines", n1 + n2))
    put("encrypted.pdf", _encrypted_pdf(img), ("error", "PDF is encrypted"))
    put("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage without xref\n", ("error", "broken PDF"))
    put("x" * 200 + ".png", good, ("lines", n))  # a very long name
    raw = os.fsencode(folder) + b"/caf\xe9-latin1.png"  # a name that is not UTF-8
    with open(raw, "wb") as f:
        f.write(good)
    expect[os.fsdecode(b"caf\xe9-latin1.png")] = ("error", "not valid UTF-8")
    return expect


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    return _encode(img.convert("RGB"), "JPEG", quality=90)


def _encrypted_pdf(img: Image.Image) -> bytes:
    from pypdf import PdfReader, PdfWriter

    plain = _encode(img.convert("RGB"), "PDF", resolution=100)
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(plain)).pages:
        writer.add_page(page)
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
