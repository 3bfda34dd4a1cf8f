"""Synthetic documents with exact ground truth: printed lines and pages with their true boxes.

Used for the parity set of an export (when no line images are given), the demo documents, the
tests and the benchmarks; ``inkbooth.ocr.training.synth`` builds its training lines on the same
fonts and texts. Pages and lines use Pillow's bundled FreeType font (Aileron) unless told otherwise,
so they need no system font and give the same pixels everywhere; ``line_images`` also draws lines
of another script in other fonts (``script_text``: words of a list, or pseudo-words of an
alphabet), as an export's parity set does for a model trained on them. Everything is seeded.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
from collections.abc import Callable, Sequence
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
    """One line of dark text on white, cropped to the text with ``pad`` pixels around it; ``font`` is
    ``default`` (Pillow's bundled font) or a font file."""
    from PIL import Image, ImageDraw

    face = load_font(font, size)
    left, top, right, bottom = face.getbbox(text)
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill="black", font=face)
    return img


def missing_glyphs(font: str, chars: str) -> str:
    """The characters of ``chars`` that ``font`` has no glyph for (drawn as its .notdef box); whitespace
    is never missing. Pillow draws each font on its own (no fallback), so these would come out as boxes."""
    face = load_font(font, 24)

    def looks(ch: str) -> tuple[Any, ...]:
        mask = face.getmask(ch)
        return face.getbbox(ch), mask.size, bytes(mask)

    notdef = looks("\uffff")  # a noncharacter: no font maps it
    return "".join(ch for ch in dict.fromkeys(chars) if not ch.isspace() and looks(ch) == notdef)


def script_text(words: Sequence[str] = (), alphabet: str = "", *, invoice: float = 0.0, max_words: int = 8,
                max_chars: int = 64) -> Callable[[random.Random], str]:
    """A text maker for ``line_images``: lines of ``words`` (a word list's, spelt with ``alphabet``)
    with numbers and punctuation where the alphabet has them; pseudo-words of the alphabet's letters
    when there are no words; ``invoice``: the share of ``random_text``'s document-like lines."""
    charset = set(alphabet) if alphabet else {chr(i) for i in range(32, 127)}
    letters = "".join(sorted(c for c in charset if c.isalpha()))
    digits = "".join(sorted(c for c in charset if c.isdigit()))
    punct = [p for p in ",.:;" if p in charset]
    pool = [w for w in words if set(w) <= charset]
    if not pool and not letters:
        raise ValueError("script_text: the alphabet has no letters and there are no words")

    def word(rng: random.Random) -> str:
        r = rng.random()
        if digits and r < 0.15:
            return "".join(rng.choice(digits) for _ in range(rng.randint(1, 5)))
        w = rng.choice(pool) if pool else "".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
        if r > 0.85 and w[:1].upper() in charset:
            w = w[:1].upper() + w[1:]
        if punct and rng.random() < 0.12:
            w += rng.choice(punct)
        return w

    def make(rng: random.Random) -> str:
        if invoice and rng.random() < invoice:
            text = random_text(rng, 2, max_words)
        else:
            text = " ".join(word(rng) for _ in range(rng.randint(2, max_words)))
        while len(text) > max_chars and " " in text:
            text = text.rsplit(" ", 1)[0]
        return text[:max_chars]

    return make


def line_images(n: int, seed: int = 0, *, fonts: Sequence[str] = (DEFAULT_FONT,),
                sizes: Sequence[int] = (20, 24, 28, 32),
                text: Callable[[random.Random], str] | None = None) -> list[tuple[Image.Image, str]]:
    """``n`` line images with their texts: ``text`` (``random_text`` unless given; see ``script_text``)
    drawn in one of ``fonts`` at one of ``sizes``. The same arguments give the same images."""
    rng = random.Random(seed)
    make = text or random_text
    out = []
    for _ in range(n):
        line = make(rng)
        size = rng.choice(tuple(sizes))
        font = rng.choice(tuple(fonts)) if len(fonts) > 1 else fonts[0]
        out.append((render_line(line, size=size, font=font), line))
    return out


PRINTABLE_ASCII = "".join(chr(i) for i in range(32, 127))


@dataclasses.dataclass
class LineStyle:
    """How ``line_images`` draws lines (its ``fonts``, ``sizes`` and ``text``); ``about`` says it in words."""

    fonts: list[str]
    sizes: list[int]
    text: Callable[[random.Random], str] | None
    about: str

    def lines(self, n: int, seed: int) -> list[tuple[Image.Image, str]]:
        return line_images(n, seed, fonts=self.fonts, sizes=self.sizes, text=self.text)


def find_file(name: str, folder: Path) -> Path | None:
    """A font or word list named in a config: the path itself where it exists, else the file of that
    name in ``folder`` (the fonts folder that ``scripts/fetch-fonts.sh`` fills); None if neither."""
    given = Path(name).expanduser()
    for candidate in (given, folder / given.name):
        if candidate.is_file():
            return candidate
    return None


def read_words(path: str | Path, charset: str) -> list[str]:
    """The words of a word list spelt with ``charset`` only (hunspell's count line and flags dropped)."""
    allowed = set(charset)
    words = []
    for i, raw in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()):
        word = raw.split("/", 1)[0].strip()
        if not (i == 0 and word.isdigit()) and word and set(word) <= allowed:
            words.append(word)
    return words


def _font_name(font: str) -> str:
    return "Pillow's default font" if font == DEFAULT_FONT else f"font {Path(font).name}"


def style_of(spec: dict[str, Any], fonts_dir: str | Path) -> LineStyle:
    """Lines like a synthetic-line config's (``SynthConfig`` fields: fonts, alphabet, word_list, texts,
    sizes, max_words, max_chars), clean (no degradation) and without its random-character lines.

    Fonts and the word list are found as ``find_file`` finds them. A font that is not there is
    replaced by Pillow's default font when that has every character of the alphabet; otherwise, or
    where a font lacks most of the alphabet's letters, this raises ValueError naming the font. A word list that is not there gives the config's document-like
    lines only, or where it has none pseudo-words of the alphabet's letters (a warning says so).
    """
    import logging

    folder = Path(fonts_dir).expanduser()
    alphabet = spec.get("alphabet") or ""
    charset = alphabet or PRINTABLE_ASCII
    fonts, missing = [], []
    for name in spec.get("fonts") or [DEFAULT_FONT]:
        found = name if name == DEFAULT_FONT else find_file(name, folder)
        if not found:
            missing.append(name)
            continue
        try:
            load_font(str(found), 24)
        except OSError as e:
            raise ValueError(f"font {name}: {found} is not a font Pillow can read ({e})") from None
        fonts.append(str(found))
    if missing:
        lacking = missing_glyphs(DEFAULT_FONT, charset)
        if lacking:
            raise ValueError(f"font {', '.join(missing)} is neither at that path nor in {folder}, and Pillow's "
                             f"default font has no glyphs for {lacking!r} of the alphabet")
        logging.getLogger(__name__).warning("font %s not found (nor in %s): Pillow's default font instead",
                                            ", ".join(missing), folder)
        fonts = list(dict.fromkeys([*fonts, DEFAULT_FONT]))
    letters = [c for c in charset if c.isalpha()]
    for font in fonts:  # a font without the script would draw boxes
        lacking = missing_glyphs(font, charset)
        if len([c for c in lacking if c.isalpha()]) > len(letters) / 2:
            raise ValueError(f"{_font_name(font)} has no glyphs for {lacking!r} of the alphabet")
        if lacking:
            logging.getLogger(__name__).warning("%s has no glyphs for %r", _font_name(font), lacking)
    texts = spec.get("texts") or {}
    words: list[str] = []
    word_list = spec.get("word_list") or ""
    if word_list:
        found = find_file(word_list, folder)
        words = read_words(found, charset) if found else []
    # Document-like lines where the config has them (and its alphabet can spell them), beside its words.
    invoice_ok = not set("".join(WORDS) + "0123456789. ") - set(charset)
    invoice = float(texts.get("invoice", 0)) if invoice_ok else 0.0
    wordy = float(texts.get("words", 0))
    if not texts:  # none recorded: document-like lines, unless an alphabet or a word list is named
        invoice = float(invoice_ok and not alphabet and not words)
        wordy = 1.0 - invoice
    share = invoice / (invoice + wordy) if invoice + wordy else 0.0
    if not words and invoice:
        share = 1.0  # no word list here: its document-like lines only, rather than pseudo-words
    if word_list and not words:
        logging.getLogger(__name__).warning("word list %s: not found (nor in %s), or no word in it is spelt with "
                                            "the alphabet: %s instead", word_list, folder,
                                            "document-like lines" if share else "pseudo-words of the alphabet")
    lo, hi = int(spec.get("min_size") or 20), int(spec.get("max_size") or 32)
    text = script_text(words, alphabet, invoice=share, max_words=int(spec.get("max_words") or 8),
                       max_chars=int(spec.get("max_chars") or 64))
    said = [f"{share:.0%} document-like"] if share else []
    if share < 1:
        said.append(f"words of {Path(word_list).name}" if words else "pseudo-words of the alphabet")
    names = ", ".join(_font_name(f).removeprefix("font ") for f in fonts)
    about = (f"{' and '.join(said)} lines in {names}, sizes {lo}-{hi} px"
             + (f", alphabet {alphabet!r}" if alphabet else ""))
    return LineStyle(fonts, list(range(lo, hi + 1)), text, about)


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
