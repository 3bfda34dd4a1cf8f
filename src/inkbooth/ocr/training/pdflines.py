"""Labelled lines from born-digital PDFs: each line of a PDF's text layer, cut from the rendered
page and labelled with its text, so that a team fine-tunes on its own documents without labelling.

Input: a folder or ``s3://`` prefix of PDFs (``*.pdf`` at any depth; other files are left alone).
Each page is rendered as the OCR run renders it (``pages.pdf_dpi``, 200 by default) and its text
layer cut into lines by the rule of the segmentation ground truth
(``inkbooth.ocr.documents.textlayer``); each line is cropped with ``pages.line_padding`` of its
height around it, as the page cutter crops, and labelled with its text (ligatures expanded,
whitespace normalised). A line is left out, counted by reason in the metrics, when its label cannot
be trusted: no text; glyphs out of reading order or other text among them; characters that map to
no letter; text at an angle or on a page printed sideways; text drawn invisibly (an OCR layer over
a scan: its text is a guess); glyph boxes with no ink under them (white text, text under a picture)
or ink in the line that no glyph accounts for (parts drawn as outlines, a fraction bar, a picture
behind the text).

A share of the lines (``augment``) gets scan-like damage (small rotations, blur, noise,
binarisation, JPEG), chosen and seeded by the line's own key, so the output is the same bytes for
the same input. Every line of a document is on one side of the split, ``train`` or ``heldout``, by a
hash of the document's name (``split_of``): a document stays on its side as others come and go, and
held-out lines never share a document with training lines. A document that cannot be used
(encrypted with no password for it, broken, no text layer) is a problem record naming it; the
run goes on.

Output, published in place (kind ``pdf-lines``): ``lines/<document id>/p<page>-<n>.png``,
``labels.jsonl`` (``image``, ``text``, ``split``, and where the line comes from: ``document``,
``page``, ``box``, ``augmented``), ``problems.jsonl`` and the manifest: the input
``prepare_lines`` takes, which keeps the split each entry gives. Labelled lines given as
``extra_lines`` are copied in with their names and no split, so ``prepare_lines`` splits them by
image name as it always does.

May import ``inkbooth.ocr.documents`` and ``inkbooth.ocr.training.lines``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.config import nested, option, to_dict
from inkbooth.ocr.documents.labels import read_labels
from inkbooth.ocr.documents.pages import PASSWORD_ENV, InputError, PagesConfig
from inkbooth.ocr.documents.textlayer import TextLine, page_lines
from inkbooth.ocr.training.lines import line_data_hash, split_of

log = logging.getLogger(__name__)

KIND = "pdf-lines"
INK = 160  # gray levels below this are ink (anti-aliased strokes of small text stay under it at 150 dpi)


@dataclasses.dataclass
class PdfLinesConfig:
    """How born-digital PDFs become labelled line crops."""

    pages: PagesConfig = option(None, "how pages are rendered and cropped: pdf_dpi, line_padding, max_pages, "
                                      "max_pixels (keep them as recognize.pages has them, so that training crops "
                                      "look like the crops the reader is given)")
    holdout: float = option(0.1, "share of documents held out for evaluation, chosen by a hash of the document's "
                                 "name; all lines of a document are on one side")
    augment: float = option(0.3, "share of lines given scan-like damage (rotation up to max_rotation, blur, noise, "
                                 "binarisation, JPEG), chosen and seeded by each line's key", min=0.0, max=1.0)
    max_rotation: float = option(1.0, "largest rotation of a damaged line, in degrees", min=0.0, max=10.0)
    seed: int = option(0, "seed of the damage, with each line's key (another seed, other damage)")
    min_glyph_ink: float = option(0.9, "share of a line's glyph boxes that must hold ink; fewer: the text layer "
                                       "is not what the page shows there (invisible text, text under a picture)",
                                  min=0.0, max=1.0)
    max_foreign_ink: float = option(0.2, "largest share of the ink in a line's box outside its glyphs; more: the "
                                         "line shows what its text does not say (text drawn as outlines, a picture)",
                                    min=0.0, max=1.0)
    max_problem_share: float = option(0.5, "fail when more than this share of the documents is unusable",
                                      min=0.0, max=1.0)
    max_aspect: float = option(0.0, "cut a line whose crop is wider than this many heights between words into "
                                    "pieces no wider (the width a reader reads at once: 21.3 for the committed "
                                    "readers' 512 x 24 input); 0: whole lines", min=0.0)

    def __post_init__(self) -> None:
        self.pages = nested(PagesConfig, self.pages, source="pages")

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "pdf_lines")
        self.pages.validate()
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")


def pdf_lines(pdfs: str, output: str, config: PdfLinesConfig | None = None, *, extra_lines: str | None = None,
              source: str | None = None) -> artifacts.Manifest:
    """Labelled line crops from the PDFs under ``pdfs`` (with the labelled lines under ``extra_lines``),
    published in place at ``output``: the input ``prepare_lines`` takes.

    ``source`` is the PDFs' URI to record where ``pdfs`` is a local copy of them (KFP's launcher
    copies imported inputs into the pod). A rerun on the same documents and config returns the
    published set; other input at an ``output`` that holds one is refused.
    """
    config = config or PdfLinesConfig()
    config.validate()
    keys = [k for k in storage.list_files(pdfs) if k.lower().endswith(".pdf")]
    if not keys:
        raise ValueError(f"{pdfs}: no PDFs here (files named *.pdf, at any depth)")
    inputs = {"pdfs": _documents_hash(pdfs, keys)}
    if extra_lines:
        inputs["extra_lines"] = line_data_hash(extra_lines)
    if artifacts.is_published(output):
        existing = artifacts.read_manifest(output)
        if existing.kind == KIND and existing.inputs == inputs and identity(existing.config) == identity(to_dict(config)):
            log.info("%s: lines of these PDFs are made already; reusing them", output)
            return existing
        raise storage.AlreadyExistsError(f"{output}: holds another artifact ({existing.kind}, other input or "
                                         "config); give another output")
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    with storage.temp_dir("inkbooth-pdflines-") as tmp:
        work = Path(tmp)
        for key in keys:
            mine: list[dict[str, Any]] = []
            tally: Counter[str] = Counter()
            try:
                _document(pdfs, key, work, config, mine, tally)
            except InputError as e:
                problems.append({"document": key, "error": str(e)})
                log.warning("skipped: %s", e)
                shutil.rmtree(work / "lines" / document_id(key), ignore_errors=True)
                continue
            records += mine
            counts.update(tally)
            counts[f"{split_of(key, config.holdout)}_documents"] += 1
        unusable = len(problems)
        if unusable > config.max_problem_share * len(keys):
            raise ValueError(f"{pdfs}: {unusable} of {len(keys)} documents are unusable (more than "
                             f"max_problem_share = {config.max_problem_share}); first: {problems[0]['error']}")
        if extra_lines:
            _add_labelled(extra_lines, work, records, problems, counts)
        if not records:
            raise ValueError(f"{pdfs}: no line could be labelled from the text layer ({len(problems)} document(s) "
                             f"unusable{'; first: ' + problems[0]['error'] if problems else ''})")
        (work / "labels.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                           encoding="utf-8")
        (work / "problems.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in problems),
                                             encoding="utf-8")
        seconds = time.perf_counter() - started
        made = counts["lines"]
        metrics = {"documents": len(keys), "documents_unusable": unusable, "lines": made,
                   "train_lines": counts["train"], "heldout_lines": counts["heldout"],
                   "train_documents": counts["train_documents"], "heldout_documents": counts["heldout_documents"],
                   "augmented_lines": counts["augmented"], "labelled_lines": counts["labelled"],
                   "lines_cut": counts["lines_cut"],
                   "labelled_problems": len(problems) - unusable,
                   "pages": counts["pages"], "pages_without_text": counts["pages_without_text"],
                   "pages_not_read": counts["pages_not_read"], "seconds": round(seconds, 3),
                   "lines_per_second": round(made / seconds, 2) if seconds > 0 else 0.0,
                   "left_out": {k.removeprefix("left_out:"): v for k, v in sorted(counts.items())
                                if k.startswith("left_out:")}}
        return artifacts.publish(work, output, kind=KIND, inputs=inputs, config=to_dict(config), metrics=metrics,
                                 lineage={"pdfs": source or pdfs, "extra_lines": extra_lines or ""})


# The page settings that shape the lines (how pages render and crops are cut); the others (how the
# OCR run finds lines on a page) do not, and a new one of those does not make the lines stale.
PAGE_FIELDS = ("pdf_dpi", "line_padding", "max_pages", "max_pixels", "pdf_password")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a pdf-lines config (as a dict) that shape its output."""
    pages = config.get("pages") or {}
    return {**config, "pages": {k: pages.get(k) for k in PAGE_FIELDS}}


def _documents_hash(pdfs: str, keys: list[str]) -> str:
    """The identity of the documents: their names and contents (the store's checksums where it has them)."""
    h = hashlib.sha256()
    for key in keys:
        uri = storage.join(pdfs, key)
        digest = storage.stat(uri).sha256 or hashlib.sha256(storage.read_bytes(uri)).hexdigest()
        h.update(f"{key}\0{digest}\n".encode())
    return h.hexdigest()


def document_id(key: str) -> str:
    """The folder of a document's crops: a hash of its name (any name makes a safe key)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _open(blob: bytes, name: str, pages: PagesConfig) -> Any:
    """The PDF in ``blob``, opened; ``InputError`` naming it if it is encrypted (without its password) or broken."""
    import pypdfium2 as pdfium

    password = pages.pdf_password or os.environ.get(PASSWORD_ENV) or None
    try:
        return pdfium.PdfDocument(blob, password=password)
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():
            given = "the password given is wrong for it" if password else "no password was given"
            raise InputError(f"{name}: PDF is encrypted and {given} (pdf_password, or the {PASSWORD_ENV} "
                             "environment variable)") from None
        raise InputError(f"{name}: broken PDF: {e}") from None


def _document(pdfs: str, key: str, work: Path, config: PdfLinesConfig, records: list[dict[str, Any]],
              counts: Counter[str]) -> None:
    """The labelled lines of one document into ``work`` and ``records``; ``InputError`` if it has none to give."""
    try:
        blob = storage.read_bytes(storage.join(pdfs, key))
    except (storage.NotFoundError, storage.UnsafeKeyError) as e:
        raise InputError(f"{key}: cannot be read: {e}") from None
    except storage.StorageError as e:  # a store that is down fails the run; a local file's refusal is its own
        if storage.is_s3(pdfs):
            raise
        raise InputError(f"{key}: cannot be read: {e}") from None
    if b"%PDF-" not in blob[:1024]:
        raise InputError(f"{key}: not a PDF (no %PDF- header)")
    pdf = _open(blob, key, config.pages)
    split = split_of(key, config.holdout)
    folder = f"lines/{document_id(key)}"
    chars = 0
    try:
        total = len(pdf)
        counts["pages_not_read"] += max(0, total - config.pages.max_pages)
        for index in range(min(total, config.pages.max_pages)):
            page = pdf[index]
            try:
                textpage = page.get_textpage()
                if textpage.count_chars() == 0:
                    counts["pages_without_text"] += 1
                    continue
                chars += textpage.count_chars()
                image = _render(page, key, index, config.pages)
                lines, turned = page_lines(page, config.pages.pdf_dpi, textpage=textpage)
                for line in lines:
                    if not line.problem and _invisible(textpage, line.chars):
                        line.problem = "invisible text (an OCR layer over a scan? its text is a guess)"
            finally:
                page.close()
            counts["pages"] += 1
            counts["left_out:rotated"] += turned
            _page_lines(image, lines, key, index, folder, split, work, config, records, counts)
    finally:
        pdf.close()
    if chars == 0:
        raise InputError(f"{key}: no text layer (a scan? label its lines by hand, or OCR it and check the text)")
    if not records:
        reasons = ", ".join(f"{k.removeprefix('left_out:')}: {v}" for k, v in counts.most_common() if v
                            and k.startswith("left_out:"))
        raise InputError(f"{key}: no line of its text layer can be a label ({reasons or 'no lines'})")


def _invisible(textpage: Any, chars: list[int]) -> bool:
    """Whether any of these characters is drawn invisibly (text render mode 3, as OCR layers are)."""
    import pypdfium2.raw as raw

    for i in chars:
        obj = raw.FPDFText_GetTextObject(textpage.raw, i)
        if obj and raw.FPDFTextObj_GetTextRenderMode(obj) == raw.FPDF_TEXTRENDERMODE_INVISIBLE:
            return True
    return False


def _render(page: Any, key: str, index: int, pages: PagesConfig) -> Any:
    """A page as an 8-bit gray image at ``pdf_dpi``, as the OCR run renders it."""
    scale = pages.pdf_dpi / 72.0
    w_pt, h_pt = page.get_size()
    w, h = math.ceil(w_pt * scale), math.ceil(h_pt * scale)
    if w * h > pages.max_pixels:
        raise InputError(f"{key}: page {index + 1} would render at {w}x{h} pixels, over the limit of "
                         f"{pages.max_pixels} (max_pixels); lower pdf_dpi or raise the limit")
    bitmap = page.render(scale=scale, grayscale=True)
    try:
        return bitmap.to_pil().convert("L")
    finally:
        bitmap.close()


def _page_lines(image: Any, lines: list[TextLine], key: str, index: int, folder: str, split: str, work: Path,
                config: PdfLinesConfig, records: list[dict[str, Any]], counts: Counter[str]) -> None:
    """The usable lines of one rendered page, cropped (some damaged), into ``work`` and ``records``."""
    import numpy as np

    ink = np.asarray(image) < INK
    for n, line in enumerate(lines, 1):
        box = (max(0, math.floor(line.box[0])), max(0, math.floor(line.box[1])),
               min(image.width, math.ceil(line.box[2])), min(image.height, math.ceil(line.box[3])))
        # A text-layer line not wholly on the rendered page (placed beyond its edge or crop box): its label
        # would hold words the crop cannot show (and a piece of it could lie wholly outside).
        off = (line.box[0] < -1 or line.box[1] < -1 or line.box[2] > image.width + 1
               or line.box[3] > image.height + 1)
        why = line.problem or ("off the page" if off else None) or ink_problem(ink, box, line.glyphs, config)
        if why:
            counts[f"left_out:{why.split(' (')[0]}"] += 1
            continue
        pad = max(1, round(config.pages.line_padding * (box[3] - box[1])))
        whole = (max(0, box[0] - pad), max(0, box[1] - pad), min(image.width, box[2] + pad),
                 min(image.height, box[3] + pad))
        cuts = pieces(line, whole, config.max_aspect)
        if len(cuts) > 1:
            counts["lines_cut"] += 1
        for p, (crop_box, text) in enumerate(cuts, 1):
            rng = _line_rng(config.seed, key, index, n if len(cuts) == 1 else n * 1000 + p)
            crop = image.crop(crop_box)
            damaged = rng.random() < config.augment
            if damaged:
                crop = scan_like(crop, rng, config.max_rotation)
                counts["augmented"] += 1
            name = f"{folder}/p{index + 1:04d}-{n:04d}" + (f"-{p}" if len(cuts) > 1 else "") + ".png"
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            crop.save(buffer, format="PNG")
            (work / name).write_bytes(buffer.getvalue())
            records.append({"image": name, "text": text, "split": split, "document": key, "page": index + 1,
                            "box": list(crop_box if len(cuts) > 1 else box), "augmented": damaged})
            counts["lines"] += 1
            counts[split] += 1


def pieces(line: TextLine, crop: tuple[int, int, int, int], max_aspect: float) -> list[tuple[tuple[int, int, int, int], str]]:
    """A line's crop box and label, or (when the crop is wider than ``max_aspect`` heights and the line
    has words) as few pieces between words as keep each crop within it, a single word too wide being
    a piece of its own. A cut lies in the middle of the white between two words, so no piece holds a
    neighbour's ink; the labels are the words each piece shows."""
    x0, y0, x1, y1 = crop
    height = y1 - y0
    if not max_aspect or (x1 - x0) <= max_aspect * height or len(line.words) < 2:
        return [(crop, line.text)]
    glyphs = line.glyphs
    left = [glyphs[a][0] for a, _, _ in line.words]
    right = [max(g[2] for g in glyphs[a:b]) for a, b, _ in line.words]
    groups: list[list[int]] = [[0]]
    pad = min(left[0] - x0, x1 - right[-1])
    for k in range(1, len(line.words)):
        first = groups[-1][0]
        if math.ceil(right[k] + pad) - math.floor(left[first] - pad) <= max_aspect * height:
            groups[-1].append(k)
        else:
            groups.append([k])
    out = []
    for g in groups:
        a, b = g[0], g[-1]
        # one rounded cut between two words, so neighbouring pieces meet and never share a column
        lo = x0 if a == 0 else max(math.floor(left[a] - pad), round((right[a - 1] + left[a]) / 2))
        hi = x1 if b == len(line.words) - 1 else min(math.ceil(right[b] + pad), round((right[b] + left[b + 1]) / 2))
        out.append(((lo, y0, hi, y1), " ".join(line.words[k][2] for k in g)))
    return out


def ink_problem(ink: Any, box: tuple[int, int, int, int], glyphs: list, config: PdfLinesConfig) -> str:
    """Why the page's ink (a boolean array, True where dark) does not show the line's glyphs
    (render-pixel boxes) in ``box``: '' when it does."""
    import numpy as np

    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return "empty box"
    covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    inked = 0
    for gx0, gy0, gx1, gy1 in glyphs:
        # a pixel of slack: anti-aliasing spills over the tight glyph box
        a, b = max(x0, math.floor(gx0) - 1), min(x1, math.ceil(gx1) + 1)
        c, d = max(y0, math.floor(gy0) - 1), min(y1, math.ceil(gy1) + 1)
        if a < b and c < d:
            covered[c - y0:d - y0, a - x0:b - x0] = True
            inked += bool(ink[c:d, a:b].any())
    if inked < config.min_glyph_ink * len(glyphs):
        return f"glyphs without ink ({inked} of {len(glyphs)} inked)"
    inside = ink[y0:y1, x0:x1]
    total = int(inside.sum())
    foreign = int((inside & ~covered).sum())
    if total and foreign > config.max_foreign_ink * total:
        return f"ink outside the glyphs ({foreign} of {total} pixels)"
    return ""


def _line_rng(seed: int, key: str, page: int, n: int) -> Any:
    """The random numbers of one line: from the seed and the line's key only, so the same every run."""
    import numpy as np

    digest = hashlib.sha256(f"{seed}\0{key}\0{page}\0{n}".encode("utf-8", "surrogateescape")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def scan_like(image: Any, rng: Any, max_rotation: float = 1.0) -> Any:
    """A gray line crop as a scanner might give it: some of a small rotation, blur, noise,
    binarisation and JPEG artefacts (each drawn from ``rng``; at least one)."""
    import numpy as np
    from PIL import Image, ImageFilter

    steps = rng.random(5) < np.array([0.5, 0.5, 0.4, 0.2, 0.5])
    if not steps.any():
        steps[rng.integers(5)] = True
    rotate, blur, noise, binarise, jpeg = (bool(s) for s in steps)
    if rotate and max_rotation > 0:
        image = image.rotate(float(rng.uniform(-max_rotation, max_rotation)), resample=Image.BICUBIC, expand=True,
                             fillcolor=255)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    if noise:
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, rng.uniform(3.0, 12.0), (image.height,
                                                                                              image.width))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    if binarise:
        level = int(rng.integers(110, 171))
        image = image.point(lambda v: 255 if v >= level else 0)
    if jpeg:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(30, 81)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    return image


def _add_labelled(extra_lines: str, work: Path, records: list[dict[str, Any]], problems: list[dict[str, Any]],
                  counts: Counter[str]) -> None:
    """The labelled lines under ``extra_lines`` copied in, their names and texts kept and no split given
    (``prepare_lines`` splits them by image name, as it would have). Their label file's problems, an
    image that cannot be read and a name taken by a crop are problem records."""
    labels_uri, entries, bad = read_labels(extra_lines)
    problems.extend({"labelled": labels_uri, **p} for p in bad)
    taken = {r["image"] for r in records} | {"labels.jsonl", "problems.jsonl", artifacts.MANIFEST}
    for entry in entries:
        where = f"{labels_uri}:{entry.line}: {entry.image}"
        if entry.image in taken or entry.image.startswith("lines/"):
            problems.append({"labelled": labels_uri, "line": entry.line, "image": entry.image,
                             "error": f"{where}: the name is taken by a PDF line (lines/ is theirs); rename it"})
            continue
        try:
            blob = storage.read_bytes(storage.join(extra_lines, entry.image))
        except (storage.NotFoundError, storage.UnsafeKeyError) as e:
            problems.append({"labelled": labels_uri, "line": entry.line, "image": entry.image,
                             "error": f"{where}: {e}"})
            continue
        (work / entry.image).parent.mkdir(parents=True, exist_ok=True)
        (work / entry.image).write_bytes(blob)
        taken.add(entry.image)
        records.append({"image": entry.image, "text": entry.text})
        counts["labelled"] += 1
