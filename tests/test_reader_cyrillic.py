"""The printed Cyrillic reader (inkbooth.readers, ``printed-cyrillic``): it reads Russian lines in the
fonts it was made for (its export passes the default gate on lines in its own script and fonts:
tests/test_readers.py, with every committed reader).

Its lines are drawn fresh here (a seed the recipe never trained on) from the recipe's last stage:
Russian words of hunspell-ru's list in the 33 fonts with Cyrillic that ``make fonts`` fetches. Its
reading of real held-out pages is bench/reading.py's (tests/readset-cyrillic.tsv, Tesseract -l rus beside).
"""

from __future__ import annotations

import random
from pathlib import Path

from inkbooth import readers
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer
from inkbooth.ocr.recognition.text import corpus_cer
from inkbooth.ocr.training import synth

FONTS = Path(".inkbooth/fonts")
NAME = "printed-cyrillic"
# Measured 0.0555 on these 40 lines (beam 4, fp32); the bound is about twice that. The committed
# `cyrillic` reader it started from (one font, DejaVu Sans) reads these lines at 0.466.
MAX_CER = 0.11


def _lines(n: int, seed: int) -> list[tuple]:
    """``n`` fresh (image, text) lines of Russian words in the reader's own fonts and sizes."""
    spec = readers.stages(readers.recipe(NAME))[-1]["synthetic"]
    cfg = synth.SynthConfig(**{**spec, "fonts": [str(FONTS / f) for f in spec["fonts"]],
                               "word_list": str(FONTS / spec["word_list"]), "texts": {"words": 1.0}})
    lines = synth.LineSynth(cfg)
    rng = random.Random(seed)
    return [lines.draw(rng) for _ in range(n)]


def test_the_printed_cyrillic_reader_reads_russian_lines_in_its_fonts(reader_exports):
    pairs = _lines(40, 2026)
    texts = [t for _, t in pairs]
    assert sum(any("а" <= c.lower() <= "я" for c in t) for t in texts) >= 30, "Russian lines, not numbers"
    # as `inkbooth ocr` reads with the reader's folder: its export, the variant the export recorded
    rec = Recognizer(reader_exports(NAME), RecognizeConfig(token_boxes=False, threads=2, num_beams=4))
    read = [r.text for r in rec.read([img for img, _ in pairs])]
    cer = corpus_cer(read, texts)
    print(f"\n{NAME} on 40 fresh Russian lines: CER {cer:.4f}")
    assert cer <= MAX_CER, list(zip(read, texts))[:5]

