"""Page segmentation on real PDFs: our line boxes vs Tesseract's, per document, in one run.

The evaluation set is tests/evalset.tsv (born-digital PDFs from Debian doc packages, fetched by
``make testdata``); the ground truth is each PDF's own text layer grouped into lines
(tests/pdftruth.py). Every page is rendered once at ``--dpi`` and given to each segmenter:

* ``ours``: ``inkbooth.ocr.layout.lines.page_lines`` (binarise, deskew, segment, crop) with each detector
  asked for (``--detectors xycut,ppocr``);
* ``tesseract``: ``tesseract PAGE - --psm 3 tsv``, level-4 (line) boxes. Its time includes its
  own recognition, which the CLI cannot skip, so
* ``tess-layout``: Tesseract's layout analysis alone (``TessBaseAPIAnalyseLayout`` through its C
  API, text lines of text blocks) gives the fair speed baseline, and its boxes are scored too.

Tesseract runs with OMP_THREAD_LIMIT=1, like our segmenter, on one core. Per document: recall and
precision at IoU >= 0.5 (one-to-one matching), merged boxes (one box holding two or more true
lines), split lines, and seconds per page.

    python bench/pages.py [--dpi 200] [--docs sigconf,apssamp] [--detectors xycut] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # This benchmark's own process only, before libtesseract loads. Never on import: tests import
    # this module, and the variable would reach every process they start afterwards.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from inkbooth.ocr.documents import pages  # noqa: E402
from inkbooth.ocr.layout.lines import page_lines  # noqa: E402
from tests.pdftruth import Score, drawing_regions, evalset, page_truth, score  # noqa: E402

TESTDATA = REPO / ".inkbooth" / "testdata"


def tesseract_tsv_lines(png: Path, dpi: int) -> list[tuple[int, int, int, int]]:
    """Line boxes (level 4 rows) of ``tesseract PNG - --psm 3 tsv``."""
    out = subprocess.run(["tesseract", str(png), "-", "--psm", "3", "--dpi", str(dpi), "tsv"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_THREAD_LIMIT": "1"}).stdout
    boxes = []
    for row in out.splitlines()[1:]:
        f = row.split("\t")
        if len(f) >= 10 and f[0] == "4":
            x, y, w, h = (int(v) for v in f[6:10])
            boxes.append((x, y, x + w, y + h))
    return boxes


class TesseractLayout:
    """Tesseract's page layout analysis alone (no recognition), through libtesseract's C API."""

    RIL_TEXTLINE = 2
    TEXT_BLOCKS = {1, 2, 3, 4, 5, 12, 13}  # flowing, heading, pullout, equation, inline eq., table, vertical text

    def __init__(self):
        lib = ctypes.CDLL("libtesseract.so.5")
        lib.TessBaseAPICreate.restype = ctypes.c_void_p
        lib.TessBaseAPIInit3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.TessBaseAPISetPageSegMode.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.TessBaseAPISetImage.argtypes = [ctypes.c_void_p, ctypes.c_char_p] + [ctypes.c_int] * 4
        lib.TessBaseAPISetSourceResolution.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.TessBaseAPIAnalyseLayout.restype = ctypes.c_void_p
        lib.TessBaseAPIAnalyseLayout.argtypes = [ctypes.c_void_p]
        lib.TessPageIteratorBoundingBox.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.POINTER(ctypes.c_int)] * 4
        lib.TessPageIteratorNext.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.TessPageIteratorBlockType.argtypes = [ctypes.c_void_p]
        lib.TessPageIteratorDelete.argtypes = [ctypes.c_void_p]
        lib.TessBaseAPIDelete.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.api = lib.TessBaseAPICreate()
        if lib.TessBaseAPIInit3(self.api, None, b"eng") != 0:
            raise RuntimeError("libtesseract: Init3 failed (is tesseract-ocr-eng installed?)")
        lib.TessBaseAPISetPageSegMode(self.api, 3)

    def lines(self, gray, dpi: int) -> list[tuple[int, int, int, int]]:
        lib = self.lib
        data = gray.tobytes()
        lib.TessBaseAPISetImage(self.api, data, gray.width, gray.height, 1, gray.width)
        lib.TessBaseAPISetSourceResolution(self.api, dpi)
        it = lib.TessBaseAPIAnalyseLayout(self.api)
        boxes = []
        if it:
            c = [ctypes.c_int() for _ in range(4)]
            while True:
                if lib.TessPageIteratorBlockType(it) in self.TEXT_BLOCKS and lib.TessPageIteratorBoundingBox(
                        it, self.RIL_TEXTLINE, *(ctypes.byref(v) for v in c)):
                    boxes.append(tuple(v.value for v in c))
                if not lib.TessPageIteratorNext(it, self.RIL_TEXTLINE):
                    break
            lib.TessPageIteratorDelete(it)
        return boxes

    def close(self):
        self.lib.TessBaseAPIDelete(self.api)


def run(dpi: int, names: list[str] | None, detectors: list[str], tesseract: bool) -> list[dict]:
    import pypdfium2 as pdfium

    if tesseract and not shutil.which("tesseract"):
        print("bench/pages.py: tesseract not found (make testdata installs tesseract-ocr); ours only")
        tesseract = False
    layout = TesseractLayout() if tesseract else None
    methods = [f"ours:{d}" for d in detectors] + (["tesseract", "tess-layout"] if tesseract else [])
    results = []
    tmp = Path(tempfile.mkdtemp())
    try:
        for doc in evalset():
            if names and doc.name not in names:
                continue
            path = TESTDATA / doc.filename
            if not path.exists():
                print(f"{doc.name}: {path} missing (make testdata); skipped")
                continue
            pdf = pdfium.PdfDocument(str(path))
            totals = {m: Score() for m in methods}
            seconds = dict.fromkeys(methods, 0.0)
            loaded = pages.load_pages(path.read_bytes(), path.name,
                                      pages.PagesConfig(pdf_dpi=dpi, max_pages=max(doc.pages) + 1))
            n = 0
            for page in loaded:
                if page.index not in doc.pages:
                    continue
                n += 1
                truth = page_truth(pdf[page.index], dpi)
                found = {}
                for d in detectors:
                    config = pages.PagesConfig(pdf_dpi=dpi, detector=d)
                    t = time.perf_counter()
                    found[f"ours:{d}"] = [ln.box for ln in page_lines(page, config)]
                    seconds[f"ours:{d}"] += time.perf_counter() - t
                if tesseract:
                    png = tmp / "page.png"
                    page.image.save(png)
                    t = time.perf_counter()
                    found["tesseract"] = tesseract_tsv_lines(png, dpi)
                    seconds["tesseract"] += time.perf_counter() - t
                    t = time.perf_counter()
                    found["tess-layout"] = layout.lines(page.image, dpi)
                    seconds["tess-layout"] += time.perf_counter() - t
                drawings = drawing_regions(pdf[page.index], dpi)
                for m, boxes in found.items():
                    totals[m] += score(truth, boxes, ignore=drawings)
            pdf.close()
            row = {"document": doc.name, "layouts": doc.layouts, "pages": n, "lines": totals[methods[0]].truth}
            for m in methods:
                s = totals[m]
                row[m] = {"recall": round(s.recall, 3), "precision": round(s.precision, 3), "merged": s.merged,
                          "split": s.split, "s_per_page": round(seconds[m] / max(n, 1), 3)}
            results.append(row)
            print(line_of(row, methods), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if layout:
            layout.close()
    return results


def line_of(row: dict, methods: list[str]) -> str:
    parts = [f"{row['document']:<9} {row['pages']:>2}p {row['lines']:>4}l"]
    for m in methods:
        r = row[m]
        parts.append(f"{m} R {r['recall']:.3f} P {r['precision']:.3f} M {r['merged']:>3} S {r['split']:>3} "
                     f"{r['s_per_page']:.2f}s")
    return " | ".join(parts)


def markdown(results: list[dict], methods: list[str]) -> str:
    head = "| document | layouts | pages | lines | " + " | ".join(
        f"{m} recall | {m} precision | {m} merged / split | {m} s/page" for m in methods) + " |"
    rows = [head, "|" + "---|" * (4 + 4 * len(methods))]
    for row in results:
        cells = [row["document"], row["layouts"], str(row["pages"]), str(row["lines"])]
        for m in methods:
            r = row[m]
            cells += [f"{r['recall']:.3f}", f"{r['precision']:.3f}", f"{r['merged']} / {r['split']}",
                      f"{r['s_per_page']:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dpi", type=int, default=200)
    ap.add_argument("--docs", help="comma-separated document names (default: all of tests/evalset.tsv)")
    ap.add_argument("--detectors", default="xycut", help="comma-separated pages.detector values")
    ap.add_argument("--no-tesseract", action="store_true")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    detectors = args.detectors.split(",")
    results = run(args.dpi, args.docs.split(",") if args.docs else None, detectors, not args.no_tesseract)
    methods = [m for m in results[0] if m.startswith("ours:") or m.startswith("tess")] if results else []
    print()
    print(markdown(results, methods))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
