"""Segmentation on real born-digital PDFs (tests/evalset.tsv), one page of each layout, against the
lines of each PDF's own text layer. bench/pages.py measures every page, with Tesseract beside it."""

from __future__ import annotations

import os
import shutil

import pytest

from inkbooth.ocr.documents import pages
from inkbooth.ocr.layout import detect
from inkbooth.ocr.layout import lines as layout
from tests.conftest import TESTDATA
from tests.pdftruth import PageTruth, Score, drawing_regions, evalset, page_truth, score

DOCS = evalset()


def quick_pages(doc, dpi=200, every=False):
    """(page, true boxes, drawing regions) of the document's quick pages (``every``: all its pages
    in the set)."""
    import pypdfium2 as pdfium

    path = TESTDATA / doc.filename
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing: `make testdata` fetches it (Debian package {doc.package})")
        pytest.skip(f"{path} missing: run `make testdata`")
    pdf = pdfium.PdfDocument(str(path))
    wanted = doc.pages if every else doc.quick
    config = pages.PagesConfig(pdf_dpi=dpi, max_pages=max(wanted) + 1)
    for page in pages.load_pages(path.read_bytes(), path.name, config):
        if page.index in wanted:
            yield page, page_truth(pdf[page.index], dpi), drawing_regions(pdf[page.index], dpi)


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_lines_of_every_layout_are_found(doc):
    total = Score()
    for page, truth, drawings in quick_pages(doc):
        total += score(truth, [ln.box for ln in layout.page_lines(page)], ignore=drawings)
    assert total.truth > 30
    # the goal, which every document meets over all its pages (README); the pages picked
    # are each layout's hard case (display formulas, tables, author grids, a photo, narrow gutters)
    assert total.recall >= 0.95 and total.precision >= 0.97, \
        f"{doc.name} ({doc.layouts}): recall {total.recall:.3f}, precision {total.precision:.3f}, {total}"


@pytest.mark.slow  # every page of the set: 69 pages, about 15-30 s on the shared CPU
@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_page_of_the_set_meets_the_goal(doc):
    total = Score()
    for page, truth, drawings in quick_pages(doc, every=True):
        total += score(truth, [ln.box for ln in layout.page_lines(page)], ignore=drawings)
    # the goal; measured (README): recall 0.980-1.000, precision 0.983-1.000 per document
    assert total.recall >= 0.95 and total.precision >= 0.97, \
        f"{doc.name} ({doc.layouts}): recall {total.recall:.3f}, precision {total.precision:.3f}, {total}"


def test_score_reads_a_row_whole_or_in_pieces():
    # One row of three pieces (cells about 2 em apart) and a row of one piece below it.
    truth = PageTruth([(0, 0, 100, 20), (140, 0, 240, 20), (280, 0, 380, 20), (0, 40, 380, 60)], [[0, 1, 2], [3]])
    whole = score(truth, [(0, 0, 380, 20), (0, 40, 380, 60)])
    assert (whole.matched, whole.hits, whole.recall, whole.precision) == (4, 2, 1.0, 1.0)
    pieces = score(truth, [(0, 0, 100, 20), (140, 0, 240, 20), (280, 0, 380, 20), (0, 40, 380, 60)])
    assert (pieces.recall, pieces.precision) == (1.0, 1.0)
    mixed = score(truth, [(0, 0, 240, 20), (280, 0, 380, 20), (0, 40, 380, 60)])
    assert (mixed.recall, mixed.precision) == (1.0, 1.0)
    across = score(truth, [(0, 0, 380, 60)])  # two rows in one box is a merge, not a reading
    assert across.matched == 0 and across.merged == 1


def test_truth_keeps_scripts_and_formulas_on_their_line():
    import pypdfium2 as pdfium

    doc = next(d for d in DOCS if d.name == "apssamp")
    path = TESTDATA / doc.filename
    if not path.exists():
        pytest.skip(f"{path} missing: run `make testdata`")
    truth = page_truth(pdfium.PdfDocument(str(path))[2], 200)
    # "g+g+ -> g+g+g+g+ ..., q+q+ -> ...": superscripts on x-height letters are one line with them
    row = [b for b in truth.pieces if b[1] < 275 and b[3] > 235 and b[0] > 880]
    assert len(row) == 1 and row[0][2] - row[0][0] > 500, row
    # equation (5): sums with limits, fractions, big brackets: one line, four lines tall
    formula = [b for b in truth.pieces if b[1] < 1229 and b[3] > 1129 and b[0] > 1000 and b[3] - b[1] > 50]
    assert len(formula) == 1 and formula[0][3] - formula[0][1] > 90, formula


def test_learned_detector_finds_lines_of_a_two_column_page():
    pytest.importorskip("onnxruntime")
    try:
        detect.model_path()
    except RuntimeError as e:
        pytest.skip(str(e))
    doc = next(d for d in DOCS if d.name == "mnras")
    total = Score()
    for page, truth, drawings in quick_pages(doc):
        found = layout.page_lines(page, pages.PagesConfig(detector="ppocr"))
        total += score(truth, [ln.box for ln in found], ignore=drawings)
    assert total.recall >= 0.9 and total.precision >= 0.9, total


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr not installed (make testdata)")
def test_tesseract_baseline_reads_line_boxes(tmp_path):
    from bench.pages import tesseract_tsv_lines

    doc = next(d for d in DOCS if d.name == "camlidl")
    page, truth, _ = next(iter(quick_pages(doc)))
    png = tmp_path / "page.png"
    page.image.save(png)
    # Measured with tesseract 5.3.0: 82 of the 83 true lines found (recall 0.988), 88 boxes (precision
    # 0.932), the same in 2 runs. The bounds leave 2 more missed lines and 3 more stray boxes (another
    # Tesseract version); a wrong page segmentation mode or box level loses half the lines or more.
    found = score(truth, tesseract_tsv_lines(png, 200))
    assert found.recall >= 80 / 83 and found.precision >= 82 / 91, found


def test_truth_reads_a_table_printed_sideways_turned():
    import pypdfium2 as pdfium

    doc = next(d for d in DOCS if d.name == "aastex")
    path = TESTDATA / doc.filename
    if not path.exists():
        pytest.skip(f"{path} missing: run `make testdata`")
    truth = page_truth(pdfium.PdfDocument(str(path))[15], 200)  # Table 1, set running down the page
    assert len(truth.pieces) > 200
    tall = [b for b in truth.pieces if b[3] - b[1] > b[2] - b[0]]
    assert len(tall) > 0.9 * len(truth.pieces)  # its lines: tall thin boxes on the page as displayed
    # the running head and page number, upright on a sideways page, are off its main direction
    assert truth.ignore and all(b[1] < 250 for b in truth.ignore)
