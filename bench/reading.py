"""Reading real documents: CER per font family on held-out PDFs, ours vs Tesseract, in one run.

The documents are tests/readset.tsv (born-digital PDFs from Debian doc packages that no reader was
trained on, fetched by ``make testdata``). Each listed page is rendered once at ``--dpi`` and read:

* ``ours``: the OCR run's own steps, page segmentation (``inkbooth.ocr.layout.lines.page_lines``)
  then the recognizer (ONNX Runtime, the defaults: variant auto, beam 4, long lines in chunks), for
  each model asked for (``--models printed,latin``: a reader's name, a folder or an export);
* ``tesseract``: ``tesseract PAGE - --psm 3 tsv`` (Tesseract 5, its ``eng`` model, or
  ``--tesseract-lang``'s), words grouped into its own lines.

The truth is the page's text layer cut into lines (``inkbooth.ocr.documents.textlayer``, the rule
the training lines are labelled by); lines whose text is no label there (formulas out of reading
order, characters that map to no letter) are left out of the score, with whatever is read over
them. Each line read is given to the true line that holds most of it (pieces of one line are joined
left to right); a line read over no true line counts as inserted text, a true line nothing was read
over as deleted. CER = all edits / all true characters, per family and per length of the true line
(``--lengths``: the chart of CER against line length). Both read on one thread; seconds per page
are CPU seconds, segmentation included (ours) and Tesseract's whole process.

    python bench/reading.py [--models printed,latin] [--docs mnras,sigconf] [--json out.json] [--chart cer.png]

Another held-out set of the same form, such as the Russian one, with its readers and Tesseract's model:

    python bench/reading.py --readset tests/readset-cyrillic.tsv --models printed-cyrillic,cyrillic --tesseract-lang rus
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # this process only (see bench/pages.py)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inkbooth.ocr.recognition.text import cer  # noqa: E402
from tests.pdftruth import _inside, iou  # noqa: E402  (the segmentation benchmark's box measures)

READSET = REPO / "tests" / "readset.tsv"
TESTDATA = REPO / ".inkbooth" / "testdata"
Box = tuple[float, float, float, float]


def readset(names: list[str] | None = None, path: Path = READSET) -> list[dict]:
    """The held-out reading documents of ``path``: name, file, 0-based pages, family."""
    out = []
    for row in path.read_text(encoding="utf-8").splitlines():
        if not row.strip() or row.startswith("#"):
            continue
        name, _package, path, _sha, pages, family = row.split("\t")
        if names and name not in names:
            continue
        wanted: list[int] = []
        for part in pages.split(","):
            a, _, b = part.partition("-")
            wanted.extend(range(int(a) - 1, int(b or a)))
        out.append({"name": name, "file": Path(path).name, "pages": wanted, "family": family})
    return out


def render(page, dpi: int):
    """A PDF page as the OCR run renders it: 8-bit gray at ``dpi``."""
    bitmap = page.render(scale=dpi / 72.0, grayscale=True)
    try:
        return bitmap.to_pil().convert("L")
    finally:
        bitmap.close()


def truth(page, dpi: int) -> tuple[list[tuple[Box, str]], list[Box], list[list[tuple[Box, str]]]]:
    """The page's labelled lines (box, text), the boxes of lines that are no label, and each labelled
    line's words (box: the union of its glyphs' boxes, text)."""
    from inkbooth.ocr.documents.textlayer import page_lines
    from inkbooth.ocr.recognition.localize import union

    lines, _ = page_lines(page, dpi)
    good = [ln for ln in lines if not ln.problem]
    words = [[(union(ln.glyphs[a:b]), w) for a, b, w in ln.words] for ln in good]
    return [(ln.box, ln.text) for ln in good], [ln.box for ln in lines if ln.problem], words


def _one_row(pieces: list[Box]) -> bool:
    """Whether boxes are pieces of one row of text: side by side, each overlapping the next in height
    by half the lower one, with gaps under 2.5 line heights (the truth cuts a row at a space of
    1.5-2.5 em, a tab stop or a justified sentence's end; a column gutter is wider). The line height
    is the taller piece's: a piece of digits or of letters without ascenders ("5" after a contents
    line's leader, "emu" in a table) has a box shorter than the row's type."""
    pieces = sorted(pieces)
    for a, b in zip(pieces, pieces[1:]):
        low, tall = sorted((a[3] - a[1], b[3] - b[1]))
        if min(a[3], b[3]) - max(a[1], b[1]) < 0.5 * low or b[0] - a[2] > 2.5 * tall:
            return False
    return True


def assign(read: list[tuple[Box, str]], true: list[tuple[Box, str]], ignored: list[Box]
           ) -> tuple[dict[int, list[int]], list[int]]:
    """Which read lines each true line is given (indices into ``read``), and the read lines over no true
    line. A read line that holds several true lines whole, pieces of one row (the truth's cut at a
    wide space, which the segmentation score accepts read either way), is given to each of them."""
    given: dict[int, list[int]] = defaultdict(list)
    inserted = []
    for k, (box, text) in enumerate(read):
        if not text.strip():
            continue
        shares = [_inside(box, t) for t, _ in true]
        best = max(range(len(true)), key=shares.__getitem__, default=-1)
        if best >= 0 and shares[best] >= 0.3:
            held = [i for i, (t, _) in enumerate(true) if _inside(t, box) >= 0.8]
            if best in held and len(held) > 1 and _one_row([true[i][0] for i in held]):
                for i in held:
                    given[i].append(k)
            else:
                given[best].append(k)
        elif not any(_inside(box, b) >= 0.3 for b in ignored):
            inserted.append(k)
    return given, inserted


def score_page(read: list[tuple[Box, str]], true: list[tuple[Box, str]], ignored: list[Box]) -> list[tuple[str, str]]:
    """(hypothesis, reference) pairs of a page: one per true line, or per group of true lines that share
    a read line (their texts joined left to right), plus ('text', '') per inserted line."""
    given, inserted = assign(read, true, ignored)
    group = list(range(len(true)))  # union-find over true lines that share a read line

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    holders: dict[int, list[int]] = defaultdict(list)
    for i, ks in given.items():
        for k in ks:
            holders[k].append(i)
    for members in holders.values():
        for i in members[1:]:
            group[root(i)] = root(members[0])
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(true)):
        groups[root(i)].append(i)
    pairs = []
    for members in groups.values():
        members.sort(key=lambda i: true[i][0][0])
        ks = sorted({k for i in members for k in given.get(i, [])}, key=lambda k: read[k][0][0])
        pairs.append((" ".join(read[k][1] for k in ks), " ".join(true[i][1] for i in members)))
    return pairs + [(read[k][1], "") for k in inserted]


def score_words(read: list[tuple[Box, str]], words_read: list[list[tuple[Box, str]]], true: list[tuple[Box, str]],
                ignored: list[Box], true_words: list[list[tuple[Box, str]]]) -> list[tuple[float, float, bool]]:
    """For each word of the text layer that was read right (the same text among the words read over its
    line), the IoU of its box read (from cross-attention) with the PDF's own, that IoU along the line only,
    and whether it was read right;
    a word read wrong gets the best IoU of any word read over its line."""
    given, _ = assign(read, true, ignored)
    out = []
    for i, words in enumerate(true_words):
        candidates = [w for k in given.get(i, []) for w in words_read[k]]
        for box, text in words:
            same = [(iou(box, b), x_iou(box, b)) for b, t in candidates if t == text]
            if same:
                out.append((*max(same), True))
            else:
                out.append((*max(((iou(box, b), x_iou(box, b)) for b, _ in candidates), default=(0.0, 0.0)), False))
    return out


def x_iou(a: Box, b: Box) -> float:
    """IoU of the boxes' horizontal extents: where along the line a word is, whatever the box's height."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    union = max(a[2], b[2]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def edits(hyp: str, ref: str) -> float:
    hyp, ref = " ".join(hyp.split()), " ".join(ref.split())
    return cer(hyp, ref) * len(ref) if ref else float(len(hyp))


def tesseract_lines(png: Path, dpi: int,
                    lang: str = "eng") -> tuple[list[tuple[Box, str]], list[list[tuple[Box, str]]]]:
    """Tesseract's lines of a page image (its level-4 boxes with their words joined) and their words
    (level-5 boxes and text), read with its ``lang`` model."""
    out = subprocess.run(["tesseract", str(png), "-", "-l", lang, "--psm", "3", "--dpi", str(dpi), "tsv"],
                         capture_output=True,
                         text=True, check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"}).stdout
    boxes: dict[tuple, Box] = {}
    words: dict[tuple, list[tuple[Box, str]]] = defaultdict(list)
    for row in out.splitlines()[1:]:
        f = row.split("\t")
        if len(f) < 12:
            continue
        key = tuple(f[1:5])
        x, y, w, h = (int(v) for v in f[6:10])
        if f[0] == "4":
            boxes[key] = (x, y, x + w, y + h)
        elif f[0] == "5" and f[11].strip():
            words[key].append(((x, y, x + w, y + h), f[11]))
    keys = [key for key in boxes if words[key]]
    return [(boxes[key], " ".join(t for _, t in words[key])) for key in keys], [words[key] for key in keys]


class Ours:
    """The OCR run's segmentation and recognizer, for one model."""

    def __init__(self, model: str, dpi: int) -> None:
        from inkbooth import readers
        from inkbooth.ocr.documents.pages import PagesConfig
        from inkbooth.ocr.recognition.export import reading_export
        from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer

        source = str(readers.path(model)) if model in readers.NAMES else model
        self.pages = PagesConfig(pdf_dpi=dpi)
        self.recognizer = Recognizer(reading_export(source, threads=1),
                                     RecognizeConfig(threads=1, pages=self.pages))

    def read(self, image, index: int) -> tuple[list[tuple[Box, str]], list[list[tuple[Box, str]]]]:
        """The page's lines read (box, text) and each line's words (box from cross-attention, text)."""
        from inkbooth.ocr.batch.results import line_records
        from inkbooth.ocr.documents.pages import Page
        from inkbooth.ocr.layout.lines import page_lines

        r = self.recognizer
        lines = page_lines(Page(index, image), self.pages)
        records = []
        for k in range(0, len(lines), 8):
            batch = lines[k:k + 8]
            records += line_records("page", batch, r.read([ln.image for ln in batch]), r.grid, r.config, r.content_box)
        return ([(tuple(rec["box"]), rec["text"]) for rec in records],
                [[(tuple(w["box"]), w["text"]) for w in rec.get("words", [])] for rec in records])


def run(models: list[str], names: list[str] | None, dpi: int, tesseract: bool, lengths: list[int],
        readset_path: Path = READSET, tesseract_lang: str = "eng") -> dict:
    import pypdfium2 as pdfium

    readers_ = {m: Ours(m, dpi) for m in models}
    systems = [*models, *(["tesseract"] if tesseract else [])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for doc in readset(names, readset_path):
            path = TESTDATA / doc["file"]
            if not path.is_file():
                print(f"reading: {path} is missing (make testdata); skipped", file=sys.stderr)
                continue
            pdf = pdfium.PdfDocument(str(path))
            for index in doc["pages"]:
                page = pdf[index]
                image = render(page, dpi)
                true, ignored, true_words = truth(page, dpi)
                page.close()
                png = Path(tmp) / "page.png"
                image.save(png)
                for system in systems:  # CPU seconds: the machine's other work does not count
                    if system == "tesseract":
                        started = resource.getrusage(resource.RUSAGE_CHILDREN)
                        read, words = tesseract_lines(png, dpi, tesseract_lang)
                        ended = resource.getrusage(resource.RUSAGE_CHILDREN)
                        seconds = ended.ru_utime + ended.ru_stime - started.ru_utime - started.ru_stime
                    else:
                        started_cpu = time.process_time()
                        read, words = readers_[system].read(image, index)
                        seconds = time.process_time() - started_cpu
                    boxes = score_words(read, words, true, ignored, true_words)
                    pairs = score_page(read, true, ignored)
                    rows.append({"doc": doc["name"], "family": doc["family"], "page": index + 1, "system": system,
                                 "seconds": seconds, "pairs": pairs, "word_boxes": boxes})
            pdf.close()
    return {"rows": rows, "systems": systems, "lengths": lengths}


def summarise(result: dict) -> dict:
    """CER and pages/s per family and system; CER per line-length bucket and system."""
    fam: dict[tuple[str, str], dict] = defaultdict(lambda: {"edits": 0.0, "chars": 0, "seconds": 0.0, "pages": 0,
                                                             "docs": set()})
    buckets: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0])
    edges = result["lengths"]
    for row in result["rows"]:
        for key in ((row["family"], row["system"]), ("all", row["system"])):
            f = fam[key]
            f["pages"] += 1
            f["seconds"] += row["seconds"]
            f["docs"].add(row["doc"])
            for hyp, ref in row["pairs"]:
                f["edits"] += edits(hyp, ref)
                f["chars"] += len(" ".join(ref.split()))
        for hyp, ref in row["pairs"]:
            n = len(" ".join(ref.split()))
            if not n:
                continue
            b = next((e for e in edges if n <= e), None)
            if b is not None:
                buckets[(b, row["system"])][0] += edits(hyp, ref)
                buckets[(b, row["system"])][1] += n
    families = {}
    for (family, system), f in fam.items():
        families.setdefault(family, {"docs": sorted(f["docs"]), "pages": f["pages"], "chars": f["chars"]})[system] = {
            "cer": round(f["edits"] / max(1, f["chars"]), 4),
            "pages_per_second": round(f["pages"] / f["seconds"], 3) if f["seconds"] else None}
    boxes: dict[str, list[tuple[float, float, bool]]] = defaultdict(list)
    for row in result["rows"]:
        boxes[row["system"]] += [tuple(b) for b in row.get("word_boxes", [])]
    word_boxes = {}
    for system, got in boxes.items():
        right = [(v, x) for v, x, ok in got if ok]
        n = max(1, len(right))
        if got:
            word_boxes[system] = {"words": len(got), "read_right": len(right),
                                  "mean_iou_read_right": round(sum(v for v, _ in right) / n, 3),
                                  "share_iou_0.5_read_right": round(sum(v >= 0.5 for v, _ in right) / n, 3),
                                  "mean_x_iou_read_right": round(sum(x for _, x in right) / n, 3),
                                  "share_x_iou_0.5_read_right": round(sum(x >= 0.5 for _, x in right) / n, 3),
                                  "share_iou_0.5_all": round(sum(v >= 0.5 for v, _, _ in got) / len(got), 3)}
    by_length = {}
    for (edge, system), (e, n) in sorted(buckets.items()):
        by_length.setdefault(str(edge), {"chars": n})[system] = round(e / max(1, n), 4)
    return {"families": families, "by_length": by_length, "word_boxes": word_boxes}


def markdown(summary: dict, systems: list[str]) -> str:
    head = "| family | documents | pages | " + " | ".join(f"{s} CER | {s} pages/s" for s in systems) + " |"
    out = [head, "|" + "---|" * (3 + 2 * len(systems))]
    for family, f in sorted(summary["families"].items(), key=lambda kv: (kv[0] == "all", kv[0])):
        cells = []
        for s in systems:
            m = f.get(s, {})
            cells += [f"{m.get('cer', float('nan')):.3f}", f"{m.get('pages_per_second') or 0:.2f}"]
        out.append(f"| {family} | {', '.join(f['docs'])} | {f['pages']} | " + " | ".join(cells) + " |")
    out += ["", "| true line length (chars, up to) | lines' chars | " + " | ".join(systems) + " |",
            "|" + "---|" * (2 + len(systems))]
    for edge, b in summary["by_length"].items():
        out.append(f"| {edge} | {b['chars']} | " + " | ".join(f"{b.get(s, float('nan')):.3f}" for s in systems) + " |")
    if summary.get("word_boxes"):
        out += ["", "| system | words of the text layer | read right | mean IoU | IoU >= 0.5 | mean IoU along the line "
                    "| along the line >= 0.5 | IoU >= 0.5, all words |", "|---|---|---|---|---|---|---|---|"]
        for s, w in summary["word_boxes"].items():
            out.append(f"| {s} | {w['words']} | {w['read_right']} | {w['mean_iou_read_right']:.3f} | "
                       f"{w['share_iou_0.5_read_right']:.3f} | {w['mean_x_iou_read_right']:.3f} | "
                       f"{w['share_x_iou_0.5_read_right']:.3f} | {w['share_iou_0.5_all']:.3f} |")
    return "\n".join(out)


def chart(summary: dict, systems: list[str], path: str, readset_path: Path = READSET) -> None:
    """CER against the true line's length, one line per system (a PNG for the README)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = [e for e in summary["by_length"] if int(e) <= 120]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for s in systems:
        ax.plot([int(e) for e in edges], [summary["by_length"][e].get(s) for e in edges], marker="o", label=s)
    ax.set_xlabel("true line length, characters (bucket's upper edge)")
    ax.set_ylabel("CER")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    where = readset_path.relative_to(REPO) if readset_path.is_relative_to(REPO) else readset_path
    ax.set_title(f"CER against line length, held-out real documents ({where})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    from bench.common import machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="printed", help="comma-separated readers (names), folders or exports")
    ap.add_argument("--docs", default="", help="comma-separated names from the readset (default: all)")
    ap.add_argument("--readset", default=str(READSET.relative_to(REPO)),
                    help="the held-out documents (a list like tests/readset.tsv, fetched into .inkbooth/testdata)")
    ap.add_argument("--tesseract-lang", default="eng", help="Tesseract's model (-l), e.g. rus for the Cyrillic readset")
    ap.add_argument("--dpi", type=int, default=200)
    ap.add_argument("--no-tesseract", action="store_true")
    ap.add_argument("--lengths", default="30,45,60,75,90,105,120,400", help="upper edges of the line-length buckets")
    ap.add_argument("--json", help="write the figures (and every line's pair) here")
    ap.add_argument("--chart", help="write the CER-against-line-length chart here (PNG)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    readset_path = (REPO / args.readset).resolve()
    result = run(models, [d for d in args.docs.split(",") if d] or None, args.dpi, not args.no_tesseract,
                 [int(x) for x in args.lengths.split(",")], readset_path, args.tesseract_lang)
    summary = summarise(result)
    print(markdown(summary, result["systems"]))
    if args.chart:
        chart(summary, result["systems"], args.chart, readset_path)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "dpi": args.dpi, **summary,
                                               "rows": result["rows"]}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
