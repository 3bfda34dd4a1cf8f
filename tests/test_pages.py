"""Pages to lines: rendered pages with exact line boxes, a real typeset PDF, and awkward inputs."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
from PIL import Image

from inkbooth.ocr.documents import pages, synthetic
from inkbooth.ocr.layout import lines as layout
from inkbooth.ocr.layout import segment
from inkbooth.ocr.layout.ink import binarize, estimate_skew
from tests.conftest import TESTDATA
from tests.pdftruth import pdf_line_boxes, recall


def lines_of(img: Image.Image, **cfg) -> list[layout.Line]:
    return layout.page_lines(pages.Page(0, img.convert("L")), pages.PagesConfig(**cfg))


@pytest.mark.parametrize("columns", [1, 2])
def test_rendered_pages_lines_found_with_iou(columns):
    found = total = 0
    for seed in range(3):
        page = synthetic.render_page(seed=seed, columns=columns)
        rate, misses = recall([ln.box for ln in page.lines], [ln.box for ln in lines_of(page.image)])
        found += len(page.lines) - len(misses)
        total += len(page.lines)
    assert total > 60
    assert found / total >= 0.95, f"{found}/{total} lines found with IoU >= 0.7"


@pytest.mark.parametrize("angle", [1.5, -2.5])
def test_skewed_page_is_straightened_and_boxes_map_back(angle):
    page = synthetic.render_page(seed=5, max_lines=20)
    w, h = page.image.size
    rotated = page.image.rotate(angle, fillcolor=255, resample=Image.BILINEAR)
    t = math.radians(angle)
    truth = []
    for ln in page.lines:  # the true boxes, rotated like the page
        xs, ys = [], []
        for x, y in ((ln.box[0], ln.box[1]), (ln.box[2], ln.box[1]), (ln.box[0], ln.box[3]), (ln.box[2], ln.box[3])):
            dx, dy = x - w / 2, y - h / 2
            xs.append(w / 2 + dx * math.cos(t) + dy * math.sin(t))
            ys.append(h / 2 - dx * math.sin(t) + dy * math.cos(t))
        truth.append((min(xs), min(ys), max(xs), max(ys)))
    assert abs(estimate_skew(binarize(np.asarray(rotated))) - angle) < 0.2
    rate, misses = recall(truth, [ln.box for ln in lines_of(rotated)])
    assert rate >= 0.95, misses


def test_real_typeset_pdf_lines_match_its_text_layer():
    pdf_path = TESTDATA / "camlidl-1.04.doc.pdf"
    if not pdf_path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{pdf_path} missing: `make testdata` fetches it (Debian package camlidl-doc)")
        pytest.skip(f"{pdf_path} missing: run `make testdata`")
    import pypdfium2 as pdfium

    dpi = 200
    doc = pdfium.PdfDocument(str(pdf_path))
    data = pdf_path.read_bytes()
    found = total = 0
    for page in pages.load_pages(data, pdf_path.name, pages.PagesConfig(pdf_dpi=dpi, max_pages=12)):
        truth = pdf_line_boxes(doc[page.index], dpi)
        predicted = [ln.box for ln in layout.page_lines(page)]
        _, misses = recall(truth, predicted)
        found += len(truth) - len(misses)
        total += len(truth)
    assert total > 300
    assert found / total >= 0.95, f"{found}/{total} text-layer lines found with IoU >= 0.7"


def test_crops_hold_the_line_and_map_to_page_boxes():
    page = synthetic.render_page(seed=9, max_lines=5)
    got = lines_of(page.image)
    assert len(got) == 5
    for ln in got:
        assert ln.image.mode == "RGB"
        x0, y0, x1, y1 = ln.box
        assert ln.image.width >= x1 - x0 and ln.image.height >= y1 - y0
        assert ln.to_page((0, 0, ln.image.width, ln.image.height))[0] <= x0


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_formats_and_pixel_modes_all_read():
    page = synthetic.render_page(seed=2, max_lines=4, width=900, height=700).image
    rgb = page.convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.asarray(page) < 128).astype(np.uint8) * 255))  # ink opaque, rest clear
    variants = {
        "png-gray": encode(page, "PNG"),
        "jpeg": encode(rgb, "JPEG", quality=90),
        "cmyk-tiff": encode(rgb.convert("CMYK"), "TIFF"),
        "palette-png": encode(rgb.convert("P", palette=Image.ADAPTIVE), "PNG"),
        "alpha-png": encode(rgba, "PNG"),
        "16bit-png": encode(Image.fromarray(np.asarray(page).astype(np.uint16) * 257), "PNG"),
        "bilevel-tiff": encode(page.convert("1"), "TIFF", compression="group4"),
        "pdf": encode(rgb, "PDF", resolution=100),
    }
    for name, data in variants.items():
        got = list(layout.document_lines(data, name))
        assert len(got) == 4, f"{name}: {len(got)} lines"


def test_multipage_tiff_keeps_page_numbers():
    imgs = [synthetic.render_page(seed=s, max_lines=n, width=800, height=600).image for s, n in ((1, 2), (2, 3))]
    data = encode(imgs[0], "TIFF", save_all=True, append_images=[imgs[1]])
    got = list(layout.document_lines(data, "two.tiff"))
    assert [ln.page for ln in got] == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"this is not an image", "unrecognised format"),
    (b"%PDF-1.4\n garbage", "broken PDF"),
])
def test_bad_inputs_are_clear_errors(data, message):
    with pytest.raises(pages.InputError, match=message) as err:
        list(layout.document_lines(data, "bad-input.bin"))
    assert "bad-input.bin" in str(err.value)


def test_truncated_image_is_an_input_error():
    data = encode(synthetic.render_page(seed=1, max_lines=3, width=600, height=400).image, "PNG")
    with pytest.raises(pages.InputError, match="truncated.png: page 1 cannot be decoded"):
        list(layout.document_lines(data[: len(data) // 2], "truncated.png"))


def test_decompression_bomb_refused_with_configurable_limit():
    big = encode(Image.new("L", (4000, 3000), 255), "PNG")
    with pytest.raises(pages.InputError, match="over the limit of 1000000"):
        list(pages.load_pages(big, "huge.png", pages.PagesConfig(max_pixels=1_000_000)))
    assert len(list(pages.load_pages(big, "huge.png", pages.PagesConfig(max_pixels=20_000_000)))) == 1


def test_blank_page_has_no_lines():
    assert lines_of(Image.new("L", (800, 600), 255)) == []
    assert lines_of(Image.new("L", (800, 600), 0)) == []


def test_white_on_black_text_is_read():
    page = synthetic.render_page(seed=4, max_lines=6, width=900, height=700).image
    inverted = Image.fromarray(255 - np.asarray(page))
    assert len(lines_of(inverted)) == 6


def test_config_is_validated():
    from inkbooth.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="pdf_dpi: must be between 36 and 1200"):
        from_dict(pages.PagesConfig, {"pdf_dpi": 5})


# ---------------------------------------------------------------------------------------------
# Layouts that broke the old cut (issue 11): pages composed from rendered lines, exact ink boxes
# ---------------------------------------------------------------------------------------------

WORDS = ("quality judging typography gyre jumpy display baseline kerning glyph leading quietly "
         "spacing hyphen bright query paying polygon justify").split()


def compose(placed, size=(1700, 2200), photo=None):
    """A page with each (text, x, y, font size) drawn at (x, y), ink overlapping where lines touch;
    returns the page and each line's true ink box."""
    page = np.full((size[1], size[0]), 255, dtype=np.uint8)
    truth = []
    for text, x, y, font in placed:
        line = np.asarray(synthetic.render_line(text, size=font, pad=0).convert("L"))
        region = page[y:y + line.shape[0], x:x + line.shape[1]]
        np.minimum(region, line[:region.shape[0], :region.shape[1]], out=region)
        ys, xs = np.nonzero(line < 128)
        truth.append((x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1))
    if photo is not None:
        x0, y0, x1, y1 = photo
        rng = np.random.default_rng(3)
        # a photo-like texture: smooth shading plus grain, dark and light parts
        yy, xx = np.mgrid[y0:y1, x0:x1]
        shade = 128 + 90 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + rng.normal(0, 30, xx.shape)
        page[y0:y1, x0:x1] = np.clip(shade, 0, 255).astype(np.uint8)
    return Image.fromarray(page), truth


def paragraph(rng, x, y, n, pitch, font, width_chars=48):
    out = []
    for i in range(n):
        words, text = list(WORDS), ""
        while len(text) < width_chars:
            text = (text + " " + words[rng.integers(len(words))]).strip()
        out.append((text, x, y + i * pitch, font))
    return out


def found_all(truth, img, rate=0.95, **cfg):
    got = [ln.box for ln in lines_of(img, **cfg)]
    r, misses = recall(truth, got, threshold=0.5)
    assert r >= rate, f"{len(misses)} of {len(truth)} lines missed: {misses[:5]}; found {got[:10]}"
    return got


def test_tight_leading_lines_touch_and_are_still_parted():
    rng = np.random.default_rng(1)
    font = 26
    ink_h = synthetic.render_line("gyre Jumpy", size=font, pad=0).height
    placed = paragraph(rng, 150, 200, 15, ink_h + 3, font)
    # every third line is set 4 px higher: its ascenders meet the descenders above, no blank row
    placed = [(t, x, y - 4 * (i // 3) - (4 if i % 3 == 2 else 0), f) for i, (t, x, y, f) in enumerate(placed)]
    img, truth = compose(placed)
    ink = binarize(np.asarray(img))
    bands = segment._runs(ink.any(axis=1))
    assert len(bands) <= 10, "some lines should touch (no blank row between them)"
    found_all(truth, img, rate=1.0, deskew=False)


def test_two_columns_with_narrow_gutter_overfull_line_and_page_number():
    rng = np.random.default_rng(2)
    font, pitch = 24, 30
    left = paragraph(rng, 120, 200, 30, pitch, font, 38)
    col_right = max(t[2] for t in compose(left)[1])
    gutter = 40  # under two line heights: narrow
    right = paragraph(rng, col_right + gutter, 200 + pitch // 2, 30, pitch, font, 38)  # offset baselines
    text = left[12][0]
    while synthetic.render_line(text, size=font, pad=0).width < col_right - 120 + gutter // 2:
        text += "m"  # an overfull line: it ends halfway into the gutter
    left[12] = (text, *left[12][1:])
    number = ("17", col_right + gutter // 2 - 12, 200 + 30 * pitch + 22, font)  # centred, 22 px below
    img, truth = compose(left + right + [number])
    got = found_all(truth[:12] + truth[13:-1], img, rate=0.97, deskew=False)
    crossing = [b for b in got if b[0] < col_right - 50 and b[2] > col_right + gutter + 50]
    assert crossing == [], f"boxes across the gutter: {crossing}"


def test_photo_is_not_cut_into_lines():
    rng = np.random.default_rng(3)
    text = paragraph(rng, 150, 150, 6, 34, 24) + paragraph(rng, 150, 1000, 6, 34, 24)
    img, truth = compose(text, photo=(150, 420, 1300, 900))
    got = found_all(truth, img, deskew=False)
    inside = [b for b in got if b[1] >= 400 and b[3] <= 920]
    assert inside == [], f"photo cut into {len(inside)} 'lines'"


def test_a_lone_ellipsis_line_is_kept():
    rng = np.random.default_rng(4)
    code = paragraph(rng, 150, 200, 3, 34, 22, 30) + [("...", 150, 200 + 3 * 34 + 10, 22)] + \
        paragraph(rng, 150, 200 + 5 * 34, 3, 34, 22, 30)
    img, truth = compose(code)
    assert truth[3][3] - truth[3][1] < pages.PagesConfig().min_line_height  # shorter than a line
    found_all(truth, img, rate=1.0, deskew=False)


def test_detector_option_is_validated():
    from inkbooth.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="detector must be"):
        from_dict(pages.PagesConfig, {"detector": "magic"})


def row_box(boxes):
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def test_table_rows_with_narrow_column_gaps_are_read_whole():
    # Cells 40 px apart (under 2 line heights, wider than a gutter's 1.5), rows on one baseline:
    # a table, whose rows TrOCR reads whole, not a page of four narrow columns.
    rng = np.random.default_rng(6)
    font, pitch, gap = 24, 36, 40
    widths = [synthetic.render_line("88.88", size=font, pad=0).width] * 4
    placed = []
    for r in range(10):
        x = 200
        for c in range(4):
            placed.append((f"{rng.integers(10, 99)}.{rng.integers(10, 99)}", x, 300 + r * pitch, font))
            x += widths[c] + gap
    placed += paragraph(rng, 200, 800, 6, pitch, font)  # text below, for the page's line height
    img, truth = compose(placed)
    rows = [row_box(truth[r * 4:(r + 1) * 4]) for r in range(10)]
    found_all(rows + truth[40:], img, rate=1.0, deskew=False)


def test_two_wide_columns_with_aligned_rows_and_a_narrow_gutter_are_parted():
    # The same narrow gutter between two wide columns of text is a gutter even when rows line up.
    rng = np.random.default_rng(7)
    font, pitch = 24, 30
    left = paragraph(rng, 120, 200, 25, pitch, font, 38)
    col_right = max(t[2] for t in compose(left)[1])
    right = paragraph(rng, col_right + 40, 200, 25, pitch, font, 38)
    img, truth = compose(left + right)
    got = found_all(truth, img, rate=1.0, deskew=False)
    assert [b for b in got if b[0] < col_right - 50 and b[2] > col_right + 90] == []


def test_margin_notes_stay_apart_from_their_column():
    # A few notes in the margin, on the baselines of a column's lines: a gutter, not table cells.
    rng = np.random.default_rng(8)
    font, pitch = 24, 30
    body = paragraph(rng, 400, 200, 30, pitch, font, 40)
    notes = [(word, 200, 200 + i * pitch, font) for i, word in ((2, "title"), (11, "author"), (23, "email"))]
    img, truth = compose(body + notes)
    got = found_all(truth, img, rate=1.0, deskew=False)
    assert all(b[0] >= 390 or b[2] <= 380 for b in got), "a margin note joined to its line"


def test_a_big_title_is_not_cut_at_its_ascenders():
    rng = np.random.default_rng(9)
    placed = [("Highlights of the Fall Edition", 200, 150, 64)] + paragraph(rng, 200, 300, 12, 32, 24)
    img, truth = compose(placed)
    got = found_all(truth, img, rate=1.0, deskew=False)
    assert sum(1 for b in got if b[3] <= truth[0][3] + 2) == 1, "the title was cut into several lines"


def test_a_display_formula_is_one_line_and_a_plot_is_none():
    # A built-up formula over three line heights tall (big brackets around a fraction) is a line
    # for TrOCR; a plotted curve as tall is not.
    rng = np.random.default_rng(10)
    text = paragraph(rng, 150, 150, 5, 32, 24) + paragraph(rng, 150, 1200, 5, 32, 24)
    parts = [("(", 400, 340, 110), ("alpha + beta", 470, 360, 24), ("gamma", 510, 420, 24), (")", 640, 340, 110),
             ("= omega + 1", 700, 390, 24)]
    img, truth = compose(text + parts)
    page = np.array(img)
    page[405:408, 470:625] = 0  # the fraction bar
    xs = np.arange(300, 1300)
    ys = (900 + 120 * np.sin(xs / 60.0)).astype(int)
    for dy in range(-2, 3):
        page[ys + dy, xs] = 0  # a thick curve, 240 px tall
    img = Image.fromarray(page)
    formula = row_box(truth[10:])
    got = found_all(truth[:10] + [formula], img, rate=1.0, deskew=False)
    assert [b for b in got if b[1] >= 760 and b[3] <= 1040] == [], "a plot's curve cut into lines"


def test_a_photo_does_not_tilt_the_skew_estimate():
    rng = np.random.default_rng(11)
    img, _ = compose(paragraph(rng, 150, 150, 8, 34, 24) + paragraph(rng, 150, 1500, 8, 34, 24),
                     photo=(100, 500, 1600, 1400))
    assert abs(estimate_skew(binarize(np.asarray(img)))) < 0.1


def test_three_full_columns_with_gutters_under_a_line_and_a_half_are_parted():
    # An index: three wide columns full of lines on one baseline grid, gutters ~1.25 line heights.
    rng = np.random.default_rng(12)
    font, pitch = 24, 30
    first = paragraph(rng, 100, 200, 30, pitch, font, 30)
    line_h = segment.line_height(binarize(np.asarray(compose(first)[0])))
    gap = round(1.25 * line_h)
    assert gap < pages.PagesConfig().gutter * line_h  # narrower than a gutter
    placed, x = [], 100
    for _ in range(3):
        column = paragraph(rng, x, 200, 30, pitch, font, 30)
        placed += column
        x = max(t[2] for t in compose(column)[1]) + gap
    img, truth = compose(placed)
    got = found_all(truth, img, rate=1.0, deskew=False)
    assert len(got) == len(truth), f"{len(got)} boxes for {len(truth)} lines"


def test_sparse_notes_a_line_and_a_quarter_from_their_lines_are_read_with_them():
    # The same narrow band beside a column with a note on a few of its lines is not a gutter: each
    # note is read with its line (a definition list, a macro name in the margin of its description).
    rng = np.random.default_rng(13)
    font, pitch = 24, 30
    notes = [(w, 200, 200 + i * pitch, font) for i, w in ((0, "quality"), (9, "display"), (20, "spacing"))]
    note_right = max(t[2] for t in compose(notes)[1])
    line_h = segment.line_height(binarize(np.asarray(compose(paragraph(rng, 100, 200, 5, pitch, font))[0])))
    body = paragraph(rng, note_right + round(1.25 * line_h), 200, 30, pitch, font, 40)
    img, truth = compose(body + notes)
    rows = [row_box([truth[i], truth[30 + k]]) for k, i in enumerate((0, 9, 20))]
    found_all([t for i, t in enumerate(truth[:30]) if i not in (0, 9, 20)] + rows, img, rate=1.0, deskew=False)


@pytest.mark.parametrize("turn", [90, 270])
def test_a_page_printed_sideways_is_read_turned(turn):
    # A table or landscape page set sideways: lines run up (or down) the page. Each line is found
    # as one box on the page as loaded, and its crop is upright (wider than tall), not letters.
    rng = np.random.default_rng(14)
    # Ordinary words (ascenders outnumber descenders, which tells up from down), not the
    # descender-heavy WORDS of the other tests.
    words = synthetic.WORDS
    text = [" ".join(words[i] for i in rng.integers(len(words), size=7)) for _ in range(12)]
    upright, truth = compose([(t, 150, 200 + 40 * i, 26) for i, t in enumerate(text)], size=(2200, 1700))
    page = upright.rotate(-turn, expand=True)  # the page as loaded: turned back by a quarter
    w, h = upright.size
    if turn == 90:  # the upright page was turned clockwise: a point (x, y) went to (h - y, x)
        turned = [(h - b[3], b[0], h - b[1], b[2]) for b in truth]
    else:
        turned = [(b[1], w - b[2], b[3], w - b[0]) for b in truth]
    ink = binarize(np.asarray(page))
    assert layout.text_turn(ink) == turn
    assert layout.text_turn(binarize(np.asarray(upright))) == 0
    lines = layout.page_lines(pages.Page(0, page), pages.PagesConfig(deskew=False))
    r, misses = recall(turned, [ln.box for ln in lines], threshold=0.7)
    assert r == 1.0 and len(lines) == len(truth), (misses, len(lines))
    assert all(ln.image.width > 3 * ln.image.height for ln in lines)
    # a box in a crop maps onto the page: the crop's whole extent covers its line's box
    for ln in lines:
        whole = ln.to_page((0, 0, ln.image.width, ln.image.height))
        assert whole[0] <= ln.box[0] and whole[1] <= ln.box[1] and whole[2] >= ln.box[2] and whole[3] >= ln.box[3]
    unturned = layout.page_lines(pages.Page(0, page), pages.PagesConfig(deskew=False, orientation=False))
    assert recall(turned, [ln.box for ln in unturned], threshold=0.5)[0] == 0.0  # cut across the lines


def test_a_dense_grid_of_numbers_is_not_turned():
    # 24 columns of two-digit numbers in a ruled grid: the columns peak in the ink's profile more
    # than the rows do, as a sideways page's lines would, but the numbers stand upright.
    from PIL import ImageDraw

    rng = np.random.default_rng(15)
    page = Image.new("L", (1700, 2200), 255)
    draw = ImageDraw.Draw(page)
    x0, y0, cols, rows, cw, rh = 100, 150, 24, 40, 60, 48
    for r in range(rows + 1):
        draw.line([(x0, y0 + r * rh), (x0 + cols * cw, y0 + r * rh)], fill=0, width=3)
    for c in range(cols + 1):
        draw.line([(x0 + c * cw, y0), (x0 + c * cw, y0 + rows * rh)], fill=0, width=3)
    for r in range(rows):
        for c in range(cols):
            page.paste(synthetic.render_line(f"{rng.integers(10, 99)}", size=18, pad=0).convert("L"),
                       (x0 + c * cw + 8, y0 + r * rh + 6))
    ink = binarize(np.asarray(page))
    small = segment._halve(segment._halve(ink))
    assert layout._profile_peaks(small) < 0.7 * layout._profile_peaks(np.ascontiguousarray(small.T))
    assert layout.text_turn(ink) == 0
