"""Light text on dark panels (slide titles, header bands, table heads) is found and read; photos are
not taken for panels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inkbooth.ocr.documents import pages, synthetic
from inkbooth.ocr.layout import lines as layout
from inkbooth.ocr.layout.ink import binarize, dark_panels
from tests.test_pages import compose, paragraph

TITLE = "Quarterly figures and the plan"


def slide(band=40, text_level=250, photo=True):
    """A page of dark-on-light lines, a dark band holding a light title, and (optionally) a photo."""
    rng = np.random.default_rng(5)
    img, truth = compose(paragraph(rng, 120, 420, 6, 44, 24), size=(1400, 1000),
                         photo=(900, 700, 1300, 950) if photo else None)
    page = np.array(img)
    page[150:260, 60:1340] = band  # the band, edge to edge of the slide's frame
    line = np.asarray(synthetic.render_line(TITLE, size=28, pad=0).convert("L"))
    y, x = 180, 140
    region = page[y:y + line.shape[0], x:x + line.shape[1]]
    # light text on the band: where the rendered line has ink, the text's level
    region[line < 128] = text_level
    ys, xs = np.nonzero(line < 128)
    title = (x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1)
    return Image.fromarray(page), truth, title


@pytest.mark.parametrize("band,text_level", [(40, 250), (90, 235), (0, 255)])
def test_dark_panels_are_found_and_photos_are_not(band, text_level):
    img, _, _ = slide(band, text_level)
    arr = np.asarray(img)
    panels = dark_panels(arr, binarize(arr))
    assert len(panels) == 1, panels
    x0, y0, x1, y1 = panels[0]
    assert abs(x0 - 60) <= 8 and abs(y0 - 150) <= 8 and abs(x1 - 1340) <= 8 and abs(y1 - 260) <= 8


def test_the_title_on_the_band_is_a_line_with_dark_text_on_light_and_the_rest_still_found():
    img, truth, title = slide()
    found = layout.page_lines(pages.Page(0, img), pages.PagesConfig())
    boxes = [ln.box for ln in found]
    hits = [ln for ln in found if ln.box[0] <= title[0] + 4 and ln.box[2] >= title[2] - 4
            and abs(ln.box[1] - title[1]) < 12 and abs(ln.box[3] - title[3]) < 12]
    assert len(hits) == 1, f"the title {title} not found among {boxes}"
    crop = np.asarray(hits[0].image.convert("L"))
    assert np.median(crop) > 200, "the crop the reader gets is light paper with dark text"
    for t in truth:
        assert any(b[0] <= t[0] + 4 and b[2] >= t[2] - 4 and abs(b[1] - t[1]) < 10 for b in boxes), t
    off = layout.page_lines(pages.Page(0, img), pages.PagesConfig(light_on_dark=False))
    assert not [ln for ln in off if abs(ln.box[1] - title[1]) < 12 and ln.box[2] - ln.box[0] < 1000], \
        "without the panel step the band is one block of ink, not the title's line"


def test_dim_text_beside_bright_text_on_a_band_comes_out_as_dark_as_it():
    """A slide's navigation bar: the current item bright, the others dimmed (grey on black). Each is
    stretched against its own surroundings, so the dim one's strokes are as dark as the bright
    one's and both binarise as ink; the band's own tone (shaded, and a second band of another tone
    below it) is paper."""
    from inkbooth.ocr.layout.ink import panel_as_paper

    line = np.asarray(synthetic.render_line("Summary", size=24, pad=0).convert("L")) < 128
    h, w = line.shape
    region = np.zeros((3 * h + 40, 2 * w + 120), dtype=np.uint8)
    region[:, :] = np.linspace(10, 30, region.shape[0]).astype(np.uint8)[:, None]  # shaded top to bottom
    region[2 * h + 10:] = 70  # a band of another tone below
    bright, dim = region[h:2 * h, 20:20 + w], region[h:2 * h, w + 100:2 * w + 100]
    bright[line], dim[line] = 250, 120
    out = panel_as_paper(region, region < 75)
    ink = binarize(out)
    for part in (out[h:2 * h, 20:20 + w], out[h:2 * h, w + 100:2 * w + 100]):
        assert np.median(part[line]) < 40, "the strokes, bright or dim, are dark"
    assert not ink[:h - 2].any() and not ink[2 * h + 10:].any(), "the bands' tones are paper"
    assert ink[h:2 * h, w + 100:2 * w + 100][line].mean() > 0.9


def test_the_latin_reader_reads_the_title_off_the_band():
    from inkbooth import readers
    from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer
    from inkbooth.ocr.recognition.text import cer

    img, _, title = slide()
    found = layout.page_lines(pages.Page(0, img), pages.PagesConfig())
    (line,) = [ln for ln in found if abs(ln.box[1] - title[1]) < 12]
    reader = Recognizer(readers.path("latin"), RecognizeConfig(backend="torch", token_boxes=False, threads=1))
    (result,) = reader.read([line.image])
    assert cer(result.text, TITLE) <= 0.05, result.text


def test_a_real_beamer_talk_keeps_its_titles_and_bars(tmp_path):
    """The beamer talk of tests/readset.tsv (dark navigation bar, shaded frame-title band, dark block
    titles): its light-on-dark lines are found."""
    import pypdfium2 as pdfium

    from tests.conftest import TESTDATA
    from tests.pdftruth import Score, page_truth, score

    path = TESTDATA / "beamerexample-conference-talk.pdf"
    if not path.exists():
        pytest.skip(f"{path} not fetched (make testdata)")
    pdf = pdfium.PdfDocument(str(path))
    on, off = Score(), Score()
    for index in range(1, 9):
        page = pdf[index]
        img = page.render(scale=200 / 72, grayscale=True).to_pil().convert("L")
        truth = page_truth(page, 200)
        page.close()
        found = layout.page_lines(pages.Page(index, img), pages.PagesConfig())
        on += score(truth, [ln.box for ln in found])
        off += score(truth, [ln.box for ln in layout.page_lines(pages.Page(index, img),
                                                                 pages.PagesConfig(light_on_dark=False))])
    pdf.close()
    # Measured on pages 2-9: recall 0.528 -> 1.000 with panels, precision 0.934 -> 0.893 (the extra
    # boxes: the single circle under the last navigation item, and rows of circles some of which are
    # dimmed, partly lost in binarising, so not a row of like marks); before
    # each stroke was stretched against its surroundings, dimmed navigation items were lost (0.880),
    # and before rows of marks were figure pieces, their circles were lines (0.848). Margins of a
    # few lines.
    print(f"\nbeamer talk: recall {off.recall:.3f} -> {on.recall:.3f}, precision {off.precision:.3f} -> {on.precision:.3f}")
    assert on.recall >= off.recall + 0.25
    assert on.recall >= 0.97 and on.precision >= 0.87


@pytest.mark.parametrize("kind", ["bars", "solid", "speck", "circles", "text", "digits", "dash", "words of o", "onc"])
def test_figure_pieces_are_not_lines_and_text_is(kind):
    """A row of solid bars (a matrix drawn as cells), a solid bar, a speck and a row of circles (a
    slide's navigation marks) are figure pieces; a line of text is not, nor a line of digits (whose
    glyphs all span the box, but are not solid), nor a dash (a table's empty cell: aastex's sideways
    table has them; solid, but flat), nor words of round letters, nor letters of one size at one pitch
    (apssamp has a line "onc")."""
    cfg = pages.PagesConfig()
    if kind == "dash":
        ink = np.zeros((2, 85), dtype=bool)
        ink[:, 3:80] = True
    elif kind in ("text", "digits", "words of o", "onc"):
        text = {"text": "quality judging typography", "digits": "2023 1000 1987 4500", "words of o": "ooo ooooo",
                "onc": "onc"}[kind]
        line = synthetic.render_line(text, size=24, pad=0)
        ink = np.asarray(line.convert("L")) < 128
    else:
        ink = np.zeros((40, 400), dtype=bool)
        if kind == "bars":
            for x in range(0, 400, 20):
                ink[:, x:x + 12] = True
        elif kind == "solid":
            ink[5:35, :] = True
        elif kind == "circles":
            ink = np.zeros((12, 100), dtype=bool)
            yy, xx = np.mgrid[:12, :12]
            ring = np.abs(np.hypot(yy - 5.5, xx - 5.5) - 5) < 1.2
            for x in range(0, 96, 14):
                ink[:, x:x + 12] |= ring
        else:
            ink = np.ones((7, 7), dtype=bool)
    box = (0, 0, ink.shape[1], ink.shape[0])
    assert layout.is_figure_piece(ink, box, cfg) is (kind not in ("text", "digits", "dash", "words of o", "onc"))
