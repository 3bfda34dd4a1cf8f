"""Segmentation on real born-digital PDFs (tests/evalset.tsv), one page of each layout, against the
lines of each PDF's own text layer. bench/pages.py measures every page, with Tesseract beside it."""

from __future__ import annotations

import os
import shutil

import pytest

from inkbooth.ocr import pages
from tests.conftest import TESTDATA
from tests.pdftruth import Score, drawing_regions, evalset, page_truth, score

DOCS = evalset()


def quick_pages(doc, dpi=200):
    """(page, true boxes, drawing regions) of the document's quick pages."""
    import pypdfium2 as pdfium

    path = TESTDATA / doc.filename
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing: `make testdata` fetches it (Debian package {doc.package})")
        pytest.skip(f"{path} missing: run `make testdata`")
    pdf = pdfium.PdfDocument(str(path))
    config = pages.PagesConfig(pdf_dpi=dpi, max_pages=max(doc.quick) + 1)
    for page in pages.load_pages(path.read_bytes(), path.name, config):
        if page.index in doc.quick:
            yield page, page_truth(pdf[page.index], dpi), drawing_regions(pdf[page.index], dpi)


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_lines_of_every_layout_are_found(doc):
    total = Score()
    for page, truth, drawings in quick_pages(doc):
        total += score(truth, [ln.box for ln in pages.page_lines(page)], ignore=drawings)
    assert total.truth > 30
    # a floor under the measured figures (README): the pages picked are each layout's hard case
    assert total.recall >= 0.93 and total.precision >= 0.93, \
        f"{doc.name} ({doc.layouts}): recall {total.recall:.3f}, precision {total.precision:.3f}, {total}"


def test_learned_detector_finds_lines_of_a_two_column_page():
    pytest.importorskip("onnxruntime")
    from inkbooth.ocr import detect

    try:
        detect.model_path()
    except RuntimeError as e:
        pytest.skip(str(e))
    doc = next(d for d in DOCS if d.name == "mnras")
    total = Score()
    for page, truth, drawings in quick_pages(doc):
        found = pages.page_lines(page, pages.PagesConfig(detector="ppocr"))
        total += score(truth, [ln.box for ln in found], ignore=drawings)
    assert total.recall >= 0.9 and total.precision >= 0.9, total


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr not installed (make testdata)")
def test_tesseract_baseline_reads_line_boxes(tmp_path):
    from bench.pages import tesseract_tsv_lines

    doc = next(d for d in DOCS if d.name == "camlidl")
    page, truth, _ = next(iter(quick_pages(doc)))
    png = tmp_path / "page.png"
    page.image.save(png)
    assert score(truth, tesseract_tsv_lines(png, 200)).recall > 0.8
