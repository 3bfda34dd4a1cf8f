"""Labelled lines from born-digital PDFs (inkbooth.ocr.training.pdflines): labels against the text
layer's own lines, crops against the ink, the split by document, problem records, determinism."""

from __future__ import annotations

import io
import json
import math
import shutil

import pytest

from inkbooth import artifacts, cli, storage
from inkbooth.ocr.documents.textlayer import normalise
from inkbooth.ocr.training import lines as linedata
from inkbooth.ocr.training.pdflines import PdfLinesConfig, document_id, pdf_lines
from tests.conftest import TESTDATA
from tests.pdftruth import evalset, iou, page_truth

DPI = 200


def text_pdf(pages: list[list[tuple[str, str]]]) -> bytes:
    """A PDF of Helvetica lines, one list of (text, how) a page; ``how`` is 'shown', 'invisible'
    (text render mode 3, as an OCR layer), 'white' (drawn, but no ink on white paper), 'off' (placed
    right of the page, where it is never rendered) or 'edge' (running over the page's left edge, as a margin note may)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", None,
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        ops = []
        for n, (text, how) in enumerate(lines):
            escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"BT {'1' if how == 'white' else '0'} g /F1 14 Tf {3 if how == 'invisible' else 0} Tr "
                       f"{ {'off': 700, 'edge': -40}.get(how, 72)} {720 - 30 * n} Td ({escaped}) Tj ET")
        content = "\n".join(ops).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        kids.append(len(objects) + 1)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> "
                       b">> /Contents %d 0 R >>" % (len(objects)))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join(f"{k} 0 R" for k in kids).encode(), len(kids))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (i, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


PAGE = [("Invoice 2024-0117 for Acme Ltd.", "shown"), ("Total due: 1,250.00 EUR", "shown"),
        ("Payable within 30 days", "shown")]


def labels(output) -> list[dict]:
    return [json.loads(x) for x in storage.read_text(storage.join(str(output), "labels.jsonl")).splitlines()]


def problems(output) -> list[dict]:
    return [json.loads(x) for x in storage.read_text(storage.join(str(output), "problems.jsonl")).splitlines()]


def real_pdf(name: str):
    (doc,) = [d for d in evalset() if d.name == name]
    path = TESTDATA / doc.filename
    if not path.exists():
        pytest.skip(f"{path} not fetched (make testdata)")
    return path


@pytest.fixture(scope="module")
def real_lines(tmp_path_factory):
    """Two evaluation-set PDFs (tables and code listings; two columns and formulas), undamaged."""
    folder = tmp_path_factory.mktemp("real") / "pdfs"
    folder.mkdir()
    for name in ("booktabs", "apssamp"):
        shutil.copy(real_pdf(name), folder)
    out = tmp_path_factory.mktemp("real") / "lines"
    manifest = pdf_lines(str(folder), str(out), PdfLinesConfig(augment=0.0))
    return folder, out, manifest


def test_labels_are_the_text_layers_lines(real_lines):
    """Every line the segmentation truth (tests/pdftruth.py) finds on a page, with pdfium's own text for its
    box: the crops found for those lines carry that text."""
    import pypdfium2 as pdfium

    folder, out, manifest = real_lines
    found = {}
    for r in labels(out):
        found.setdefault((r["document"], r["page"]), []).append(r)
    truths = same = covered = 0
    for path in sorted(folder.iterdir()):
        pdf = pdfium.PdfDocument(str(path))
        for index in range(len(pdf)):
            page = pdf[index]
            assert page.get_rotation() == 0
            textpage, height, scale = page.get_textpage(), page.get_size()[1], DPI / 72
            mine = found.get((path.name, index + 1), [])
            for box in page_truth(page, DPI).pieces:
                truths += 1
                match = max(mine, key=lambda r: iou(r["box"], box), default=None)
                if match is None or iou(match["box"], box) < 0.8:
                    continue
                covered += 1
                x0, y0, x1, y1 = box
                inset = 0.05 * (y1 - y0)  # pdfium takes every glyph the rectangle touches: not the neighbours'
                truth = normalise(textpage.get_text_bounded(x0 / scale, height - (y1 - inset) / scale, x1 / scale,
                                                            height - (y0 + inset) / scale))
                same += truth == match["text"]
            page.close()
        pdf.close()
    print(f"\npdf-lines on booktabs + apssamp: {truths} true lines, {covered} cropped ({covered / truths:.1%}), "
          f"{same} with the text layer's text ({same / covered:.1%}); left out: {manifest.metrics['left_out']}")
    assert covered >= 0.95 * truths
    assert same >= 0.95 * covered
    m = manifest.metrics
    assert m["documents"] == 2 and m["documents_unusable"] == 0 and m["pages"] == 25 and covered <= m["lines"] <= truths


def test_a_crop_holds_its_line_and_not_its_neighbours(real_lines):
    import numpy as np
    import pypdfium2 as pdfium
    from PIL import Image

    folder, out, _ = real_lines
    by_page: dict = {}
    for r in labels(out):
        by_page.setdefault((r["document"], r["page"]), []).append(r)
    checked = clean = 0
    pdfs = {path.name: pdfium.PdfDocument(str(path)) for path in folder.iterdir()}
    for (document, number), rows in sorted(by_page.items()):
        page = pdfs[document][number - 1]
        ink = np.asarray(page.render(scale=DPI / 72, grayscale=True).to_pil().convert("L")) < 160
        page.close()
        for r in rows:
            x0, y0, x1, y1 = r["box"]
            pad = max(1, round(0.15 * (y1 - y0)))
            area = (max(0, x0 - pad), max(0, y0 - pad), min(ink.shape[1], x1 + pad), min(ink.shape[0], y1 + pad))
            crop = np.asarray(Image.open(out / r["image"]).convert("L")) < 160
            assert crop.shape == (area[3] - area[1], area[2] - area[0]), "the box and the padding of the page cutter"
            assert (crop == ink[area[1]:area[3], area[0]:area[2]]).all(), "an undamaged crop is the rendered page"
            assert ink[y0:y1, x0:x1].sum() > 0, "its ink"
            # Neighbours: no other line's box is more than a fifth inside the crop.
            intruders = [o for o in rows if o is not r and _inside(o["box"], area) > 0.2]
            checked += 1
            clean += not intruders
    for pdf in pdfs.values():
        pdf.close()
    print(f"\n{clean} of {checked} crops hold no other line")
    assert clean >= 0.97 * checked


def _inside(box, area) -> float:
    ix = max(0, min(box[2], area[2]) - max(box[0], area[0]))
    iy = max(0, min(box[3], area[3]) - max(box[1], area[1]))
    return ix * iy / max(1, (box[2] - box[0]) * (box[3] - box[1]))


def test_split_is_by_document_and_stable(tmp_path):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    for name in ("a.pdf", "b.pdf", "c.pdf", "sub/d.pdf", "e.pdf", "f.pdf"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(text_pdf([PAGE, PAGE[:2]]))
    cfg = PdfLinesConfig(holdout=0.5)
    pdf_lines(str(folder), str(tmp_path / "one"), cfg)
    first = {}
    for r in labels(tmp_path / "one"):
        assert r["split"] == linedata.split_of(r["document"], 0.5)
        assert r["image"].startswith(f"lines/{document_id(r['document'])}/p")
        first.setdefault(r["document"], set()).add(r["split"])
    assert all(len(sides) == 1 for sides in first.values()), "all lines of a document on one side"
    assert {s for sides in first.values() for s in sides} == {"train", "heldout"}
    # Other documents come and go: the rest keep their sides.
    (folder / "c.pdf").unlink()
    (folder / "g.pdf").write_bytes(text_pdf([PAGE]))
    pdf_lines(str(folder), str(tmp_path / "two"), cfg)
    second = {r["document"]: r["split"] for r in labels(tmp_path / "two")}
    assert all(second[d] == next(iter(first[d])) for d in first if d != "c.pdf")
    # prepare_lines keeps the split the labels give (its image-name hash would part a document).
    prepared = tmp_path / "prepared"
    m = linedata.prepare_lines(str(tmp_path / "one"), str(prepared), linedata.LinesConfig(holdout=0.5))
    given = {r["image"]: r["split"] for r in labels(tmp_path / "one")}
    kept = [json.loads(x) for x in artifacts.read_text(str(prepared), "labels.jsonl").splitlines()]
    assert {r["source"]: r["split"] for r in kept} == given
    assert m.metrics["heldout_lines"] == sum(s == "heldout" for s in given.values())


def test_unusable_documents_are_problem_records_and_the_run_goes_on(tmp_path, monkeypatch):
    from PIL import Image
    from pypdf import PdfReader, PdfWriter

    monkeypatch.delenv("INKBOOTH_PDF_PASSWORD", raising=False)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    good = text_pdf([PAGE])
    (folder / "good.pdf").write_bytes(good)
    scan = io.BytesIO()
    Image.new("L", (600, 300), 255).save(scan, format="PDF")
    (folder / "scan.pdf").write_bytes(scan.getvalue())
    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(good)).pages:
        writer.add_page(page)
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-128")
    locked = io.BytesIO()
    writer.write(locked)
    (folder / "locked.pdf").write_bytes(locked.getvalue())
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage without xref\n")
    (folder / "ocr-layer.pdf").write_bytes(text_pdf([[(t, "invisible") for t, _ in PAGE]]))
    (folder / "notes.txt").write_text("not a document")
    cfg = PdfLinesConfig(max_problem_share=1.0)
    m = pdf_lines(str(folder), str(tmp_path / "out"), cfg)
    found = {p["document"]: p["error"] for p in problems(tmp_path / "out")}
    assert set(found) == {"scan.pdf", "locked.pdf", "broken.pdf", "ocr-layer.pdf"}
    assert "no text layer" in found["scan.pdf"] and "encrypted" in found["locked.pdf"]
    assert "broken PDF" in found["broken.pdf"]
    assert "no line of its text layer can be a label (invisible text: 3)" in found["ocr-layer.pdf"]
    assert [r["text"] for r in labels(tmp_path / "out")] == [t for t, _ in PAGE]
    assert m.metrics["documents"] == 5 and m.metrics["documents_unusable"] == 4
    assert not (tmp_path / "out" / "lines" / document_id("locked.pdf")).exists()
    # With its password (a Secret on a cluster), the encrypted one gives its lines; too many problems fail.
    monkeypatch.setenv("INKBOOTH_PDF_PASSWORD", "s3cret")
    m = pdf_lines(str(folder), str(tmp_path / "unlocked"), cfg)
    assert {r["document"] for r in labels(tmp_path / "unlocked")} == {"good.pdf", "locked.pdf"}
    with pytest.raises(ValueError, match="3 of 5 documents are unusable"):
        pdf_lines(str(folder), str(tmp_path / "strict"), PdfLinesConfig(max_problem_share=0.25))


def test_text_the_page_does_not_show_is_left_out(tmp_path):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "layers.pdf").write_bytes(text_pdf([[("Printed and seen", "shown"), ("An OCR layer guess", "invisible"),
                                                   ("White on white", "white"), ("Seen again", "shown"),
                                                   ("Off the page", "off"),
                                                   ("Over the edge of the page: a line long enough to be cut in pieces, some of them "
                                                    "wholly outside it", "edge")]]))
    m = pdf_lines(str(folder), str(tmp_path / "out"), PdfLinesConfig(augment=0.0))
    assert [r["text"] for r in labels(tmp_path / "out")] == ["Printed and seen", "Seen again"]
    assert m.metrics["left_out"] == {"glyphs without ink": 1, "invisible text": 1, "off the page": 2, "rotated": 0}


def test_same_input_same_bytes_and_the_damage_is_seeded(tmp_path):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(text_pdf([PAGE, PAGE]))
    made = []
    for name, seed in (("one", 0), ("two", 0), ("three", 1)):
        pdf_lines(str(folder), str(tmp_path / name), PdfLinesConfig(augment=1.0, seed=seed))
        files = {p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
                 for p in sorted((tmp_path / name).rglob("*")) if p.is_file() and p.name != "manifest.json"}
        made.append(files)
    assert made[0] == made[1], "same input, same config: the same bytes"
    assert made[0]["labels.jsonl"] == made[2]["labels.jsonl"], "the labels do not depend on the damage"
    crops = [k for k in made[0] if k.endswith(".png")]
    assert len(crops) == 6 and sum(made[0][k] != made[2][k] for k in crops) >= 5, "another seed, other damage"
    clean = pdf_lines(str(folder), str(tmp_path / "clean"), PdfLinesConfig(augment=0.0))
    assert clean.metrics["augmented_lines"] == 0
    again = pdf_lines(str(folder), str(tmp_path / "clean"), PdfLinesConfig(augment=0.0))
    assert again.content_hash == clean.content_hash, "a rerun reuses the published lines"
    with pytest.raises(storage.AlreadyExistsError):
        pdf_lines(str(folder), str(tmp_path / "clean"), PdfLinesConfig(augment=0.5))


def test_labelled_lines_besides_and_the_cli(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(text_pdf([PAGE]))
    extra = tmp_path / "extra"
    (extra / "crops").mkdir(parents=True)
    Image.new("L", (120, 24), 255).save(extra / "crops" / "0001.png")
    (extra / "labels.jsonl").write_text(json.dumps({"image": "crops/0001.png", "text": "by hand"}) + "\n"
                                        + json.dumps({"image": "crops/missing.png", "text": "gone"}) + "\n")
    config = tmp_path / "pdf-lines.yaml"
    config.write_text("augment: 0.0\npages: {pdf_dpi: 150}\n")
    assert cli.main(["pdf-lines", str(folder), str(tmp_path / "out"), "--config", str(config),
                     "--extra-lines", str(extra)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"]["lines"] == 3 and printed["metrics"]["labelled_lines"] == 1
    rows = labels(tmp_path / "out")
    assert rows[-1] == {"image": "crops/0001.png", "text": "by hand"}, "kept as given, no split: prepare_lines hashes it"
    assert [p["image"] for p in problems(tmp_path / "out")] == ["crops/missing.png"]
    h = math.ceil(14 * 150 / 72)
    assert all(r["box"][3] - r["box"][1] <= h for r in rows[:-1]), "rendered at the configured dpi"


def test_pdfs_and_lines_on_s3(bucket, tmp_path):
    folder = tmp_path / "pdfs"
    (folder / "2024").mkdir(parents=True)
    (folder / "2024" / "a.pdf").write_bytes(text_pdf([PAGE]))
    (folder / "b.PDF").write_bytes(text_pdf([PAGE[:1]]))
    storage.upload_dir(folder, f"{bucket}/pdfs")
    m = pdf_lines(f"{bucket}/pdfs", f"{bucket}/lines", PdfLinesConfig(holdout=0.0))
    assert m.metrics["lines"] == 4 and m.lineage["pdfs"] == f"{bucket}/pdfs"
    assert pdf_lines(str(folder), str(tmp_path / "local"), PdfLinesConfig(holdout=0.0)).inputs == m.inputs
    prepared = linedata.prepare_lines(f"{bucket}/lines", f"{bucket}/prepared")
    assert prepared.metrics["train_lines"] == 4 and prepared.lineage["data"] == f"{bucket}/lines"


def test_long_lines_cut_between_words_keep_their_labels(real_lines, tmp_path):
    """max_aspect: a line wider than the reader reads at once is cut between words into pieces, each no
    wider (a single word too wide excepted), side by side, whose labels joined are the whole line's."""
    import re

    folder, whole_out, _ = real_lines
    out = tmp_path / "cut"
    manifest = pdf_lines(str(folder), str(out), PdfLinesConfig(augment=0.0, max_aspect=12.0))
    whole = {r["image"]: r for r in labels(whole_out)}
    pieces: dict = {}
    for r in labels(out):
        m = re.fullmatch(r"(.*p\d{4}-\d{4})(?:-(\d+))?\.png", r["image"])
        pieces.setdefault(m.group(1) + ".png", []).append((int(m.group(2) or 0), r))
    cut = 0
    for name, parts in pieces.items():
        parts = [r for _, r in sorted(parts, key=lambda p: p[0])]
        assert " ".join(r["text"] for r in parts) == whole[name]["text"], name
        if len(parts) == 1:
            continue
        cut += 1
        boxes = [r["box"] for r in parts]
        assert all(a[2] <= b[0] for a, b in zip(boxes, boxes[1:])), f"{name}: pieces overlap or are out of order"
        for r in parts:
            x0, y0, x1, y1 = r["box"]
            assert (x1 - x0) <= 12.0 * (y1 - y0) or " " not in r["text"], f"{r['image']} is wider than asked"
    assert cut == manifest.metrics["lines_cut"] > 50
    assert manifest.metrics["lines"] > len(whole)


def test_a_published_set_is_reused_unless_a_setting_that_shapes_it_changed(tmp_path):
    """A rerun returns the published lines when only a page setting the lines do not depend on changed
    (how the OCR run finds lines: light_on_dark, deskew, ...), and is refused at that output when one
    they do depend on changed (the render DPI)."""
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(text_pdf([PAGE]))
    out = str(tmp_path / "lines")
    first = pdf_lines(str(folder), out, PdfLinesConfig())
    again = pdf_lines(str(folder), out, PdfLinesConfig(pages={"light_on_dark": False, "deskew": False}))
    assert again.content_hash == first.content_hash
    with pytest.raises(storage.AlreadyExistsError, match="other input or config"):
        pdf_lines(str(folder), out, PdfLinesConfig(pages={"pdf_dpi": 150}))
