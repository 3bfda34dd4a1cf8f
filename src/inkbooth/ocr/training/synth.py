"""Synthetic training lines: text from a word list or generators, in given fonts, cropped like the page cutter.

``LineSynth`` draws (line image, text) pairs from a ``SynthConfig``; a draw depends only on the RNG
given, so a training step's lines are a pure function of its seed. Training lines may use any font
file (the Debian fonts that ``scripts/fetch-fonts.sh`` fetches) and are degraded the way scans and
renders are (gray levels, blur, JPEG, resampling).

May import ``inkbooth.ocr.documents``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inkbooth.config import option
from inkbooth.ocr.documents.synthetic import DEFAULT_FONT, WORDS, font_identity, load_font, random_text

if TYPE_CHECKING:
    from PIL import Image


PRINTABLE_ASCII = "".join(chr(i) for i in range(32, 127))


TEXT_KINDS = ("invoice", "words", "chars")


_PUNCT_AFTER = ",.:;!?)"


_PUNCT_BEFORE = "(\"'"


@dataclasses.dataclass
class SynthConfig:
    """Synthetic training lines: which text, in which fonts, rendered and cropped how."""

    fonts: list[str] = option([DEFAULT_FONT], "font files (.ttf/.otf), or 'default' for Pillow's bundled font")
    texts: dict[str, float] = option({"invoice": 1.0}, "text kinds and their shares: invoice (document-like "
                                     "words and amounts), words (from word_list), chars (random characters)")
    word_list: str = option("", "word list (one word a line; hunspell .dic flags after '/' are dropped), "
                                "path or s3:// URI; needed for 'words'")
    alphabet: str = option("", "every character a line may hold ('' = printable ASCII)")
    min_size: int = option(18, "smallest font size (pixels)")
    max_size: int = option(34, "largest font size (pixels)")
    max_words: int = option(8, "most words in a line")
    max_chars: int = option(60, "longest line (characters)")
    padding: list[float] = option([0.08, 0.3], "crop padding around the ink, as a range of fractions of the "
                                               "ink height (the page cutter uses 0.15)")
    degrade: float = option(0.5, "share of lines degraded (gray levels, blur, JPEG, resampling)")

    def validate(self) -> None:
        unknown = sorted(set(self.texts) - set(TEXT_KINDS))
        if unknown:
            raise ValueError(f"texts: unknown kind(s) {unknown}; choose from {', '.join(TEXT_KINDS)}")
        if not self.texts or any(v < 0 for v in self.texts.values()) or sum(self.texts.values()) <= 0:
            raise ValueError("texts: give at least one kind with a positive share")
        if self.texts.get("words") and not self.word_list:
            raise ValueError("texts: 'words' needs a word_list")
        if not self.fonts:
            raise ValueError("fonts: give at least one font")
        if not 4 <= self.min_size <= self.max_size:
            raise ValueError("font sizes: need 4 <= min_size <= max_size")
        if len(self.padding) != 2 or not 0 <= self.padding[0] <= self.padding[1]:
            raise ValueError("padding: expected [low, high] with 0 <= low <= high")
        if self.max_chars < 1 or self.max_words < 1:
            raise ValueError("max_chars and max_words must be at least 1")

    @property
    def charset(self) -> str:
        return self.alphabet or PRINTABLE_ASCII


def read_word_list(uri: str, charset: str) -> list[str]:
    """The words of a word list that are spelt with ``charset`` only (hunspell flags dropped)."""
    from inkbooth import storage

    allowed = set(charset)
    words = []
    for i, raw in enumerate(storage.read_text(uri).splitlines()):
        word = raw.split("/", 1)[0].strip()
        if i == 0 and word.isdigit():  # a hunspell .dic starts with its word count
            continue
        if word and set(word) <= allowed:
            words.append(word)
    if not words:
        raise ValueError(f"{uri}: no usable words (none spelt only with the alphabet)")
    return words


class LineSynth:
    """Draws (line image, text) pairs from a ``SynthConfig``; a draw depends only on the RNG given."""

    def __init__(self, config: SynthConfig) -> None:
        config.validate()
        self.config = config
        self.charset = config.charset
        self.words = read_word_list(config.word_list, self.charset) if config.texts.get("words") else []
        self.kinds = [k for k in TEXT_KINDS if config.texts.get(k, 0) > 0]
        self.weights = [config.texts[k] for k in self.kinds]
        for spec in config.fonts:
            load_font(spec, config.min_size)  # a missing font fails here, not mid-training
        if "invoice" in self.kinds:
            bad = set("".join(WORDS) + "0123456789. ") - set(self.charset)
            if bad:
                raise ValueError(f"texts: 'invoice' lines use characters outside the alphabet: {''.join(sorted(bad))!r}")

    def lineage(self) -> dict[str, Any]:
        """What the synthetic lines are made from: fonts and word list by content."""
        out: dict[str, Any] = {"fonts": {Path(f).name: font_identity(f) for f in self.config.fonts}}
        if self.config.word_list:
            from inkbooth import storage

            out["word_list"] = self.config.word_list
            out["word_list_sha256"] = hashlib.sha256(storage.read_bytes(self.config.word_list)).hexdigest()
        return out

    def text(self, rng: random.Random) -> str:
        return self.text_and_kind(rng)[0]

    def text_and_kind(self, rng: random.Random) -> tuple[str, str]:
        """A line's text, and which of the config's text kinds made it."""
        kind = rng.choices(self.kinds, self.weights)[0]
        cfg = self.config
        if kind == "invoice":
            text = random_text(rng, 1, cfg.max_words)
        elif kind == "chars":
            n = rng.randint(1, cfg.max_chars)
            text = "".join(" " if rng.random() < 0.12 else rng.choice(self.charset) for _ in range(n))
        else:
            parts = []
            for _ in range(rng.randint(1, cfg.max_words)):
                r = rng.random()
                if r < 0.12:
                    word = str(rng.randint(0, 10 ** rng.randint(1, 6)))
                else:
                    word = rng.choice(self.words)
                    if r > 0.9:
                        word = word.upper()
                    elif r > 0.75:
                        word = word[:1].upper() + word[1:]
                punct = rng.random()
                if punct < 0.15:
                    word += rng.choice(_PUNCT_AFTER)
                elif punct < 0.18:
                    word = rng.choice(_PUNCT_BEFORE) + word
                parts.append(word)
            text = " ".join(parts)
        text = " ".join(text.split())  # no leading, trailing or double spaces: a crop cannot show them
        allowed = set(self.charset)
        text = "".join(c for c in text if c in allowed)
        while len(text) > cfg.max_chars and " " in text:
            text = text.rsplit(" ", 1)[0]
        return text[:cfg.max_chars].strip() or rng.choice(self.charset.replace(" ", "")), kind

    def draw(self, rng: random.Random) -> tuple[Image.Image, str]:
        """One line: a text, rendered in a random font and size, cropped like the page cutter's crops."""
        image, text, _ = self.sample(rng)
        return image, text

    def sample(self, rng: random.Random, font: str | None = None) -> tuple[Image.Image, str, str]:
        """One line as ``draw`` makes it, in ``font`` if given, with its text kind: (image, text, kind)."""
        text, kind = self.text_and_kind(rng)
        cfg = self.config
        font = font if font is not None else rng.choice(cfg.fonts)
        return render_crop(text, font, rng.randint(cfg.min_size, cfg.max_size), rng,
                           padding=rng.uniform(*cfg.padding), degrade=rng.random() < cfg.degrade), text, kind


def render_crop(text: str, font: str, size: int, rng: random.Random, *, padding: float = 0.15,
                degrade: bool = False) -> Image.Image:
    """``text`` drawn on white, cropped to its ink plus ``padding`` x ink height (as ``pages`` crops)."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    f = load_font(font, size)
    left, top, right, bottom = f.getbbox(text)
    margin = size
    ink_level, paper = (rng.randint(0, 70), rng.randint(215, 255)) if degrade else (0, 255)
    img = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), paper)
    ImageDraw.Draw(img).text((margin - left, margin - top), text, font=f, fill=ink_level)
    if degrade:
        r = rng.random()
        if r < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
        elif r < 0.6:
            # Printed at one resolution, read at another (e.g. a 150 dpi PDF rendered at 200 dpi).
            scale = rng.uniform(0.6, 0.9)
            small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                               Image.BILINEAR)
            img = small.resize(img.size, Image.BILINEAR)
        if rng.random() < 0.3:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=rng.randint(60, 95))
            img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    arr = np.asarray(img)
    ys, xs = np.nonzero(arr < (int(ink_level) + int(paper)) // 2)
    if len(ys) == 0:  # nothing drawn (only spaces): a blank crop
        return img.convert("RGB")
    pad = max(1, round(padding * (int(ys.max()) - int(ys.min()) + 1)))
    box = (max(0, int(xs.min()) - pad), max(0, int(ys.min()) - pad), min(img.width, int(xs.max()) + 1 + pad),
           min(img.height, int(ys.max()) + 1 + pad))
    return img.crop(box).convert("RGB")
