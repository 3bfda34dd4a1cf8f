"""The bad-input corpus through the real stages: a clear error naming the input, or handled; the batch goes on."""

from __future__ import annotations

import logging

import pytest

from inkbooth.dreambooth import train
from inkbooth.ocr.batch.results import document_result
from inkbooth.ocr.batch.shard import recognize_documents
from inkbooth.ocr.recognition.recognizer import RecognizeConfig
from tests.badinputs import build


def test_every_bad_document_is_an_error_record_or_read_and_the_batch_goes_on(tiny_onnx, tmp_path):
    expect = build(tmp_path / "bad")
    model, _ = tiny_onnx
    out = str(tmp_path / "out")
    summary = recognize_documents(str(tmp_path / "bad"), str(model), out,
                                  RecognizeConfig(num_beams=1, max_new_tokens=8), progress=False)
    errors = [k for k, (kind, _) in expect.items() if kind == "error"]
    assert summary["documents"] == len(expect) and summary["errors"] == len(errors)
    for name, (kind, what) in expect.items():
        result = document_result(out, name)
        if kind == "lines":
            assert result["status"] == "ok" and result["lines"] == what, name
        else:
            assert result["status"] == "error", name
            message = result["records"][0]["error"]
            assert what in message, (name, message)
            assert name[:20] in message or repr(name)[1:21] in message, f"the error names the file: {message}"


def test_decompression_bomb_limit_is_configurable(tiny_onnx, tmp_path):
    from PIL import Image

    (tmp_path / "docs").mkdir()
    Image.new("1", (9000, 9000), 1).save(tmp_path / "docs" / "large.png")  # 81 megapixels, over the default 60
    model, _ = tiny_onnx
    strict = recognize_documents(str(tmp_path / "docs"), str(model), str(tmp_path / "a"),
                                 RecognizeConfig(num_beams=1), progress=False)
    assert strict["errors"] == 1
    cfg = RecognizeConfig(num_beams=1, max_new_tokens=4, pages={"max_pixels": 100_000_000})
    summary = recognize_documents(str(tmp_path / "docs"), str(model), str(tmp_path / "b"), cfg,
                                  progress=False)
    assert summary["done"] == 1 and summary["lines"] == 0, "allowed by a higher limit: a blank page, no lines"


def test_subject_images_one_duplicates_and_corrupt(tiny_sd, subject_dir, class_set, tmp_path, caplog):
    one = tmp_path / "one"
    one.mkdir()
    (one / "only.png").write_bytes((subject_dir / "subject-00.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        m = train.train_dreambooth(str(tiny_sd), str(one), str(tmp_path / "o1"), train.TrainConfig(max_train_steps=1),
                                   class_images=class_set)
    assert m.metrics["steps"] == 1 and "1 subject image(s)" in caplog.text
    dup = tmp_path / "dup"
    dup.mkdir()
    for name in ("a.png", "b.png"):
        (dup / name).write_bytes((subject_dir / "subject-00.png").read_bytes())
    (dup / "c.png").write_bytes((subject_dir / "subject-01.png").read_bytes())
    images, _ = train.load_images(str(dup), "subject")
    assert len(images) == 2
    (dup / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(ValueError, match=r"broken\.jpg: not a readable image"):
        train.load_images(str(dup), "subject")


def test_a_wrong_pdf_password_is_called_wrong_not_missing():
    """Issue 18 item 11: a wrong password said "give its password", as if none had been given."""
    from inkbooth.ocr.documents import pages, synthetic
    from tests.badinputs import _encrypted_pdf

    locked = _encrypted_pdf(synthetic.render_page(seed=4, max_lines=2, width=600, height=300).image)  # "s3cret"
    with pytest.raises(pages.InputError, match=r"locked\.pdf: PDF is encrypted; give its password"):
        list(pages.load_pages(locked, "locked.pdf"))
    with pytest.raises(pages.InputError) as wrong:
        list(pages.load_pages(locked, "locked.pdf", pages.PagesConfig(pdf_password="guess")))
    message = str(wrong.value)
    assert "locked.pdf" in message and "password given" in message and "is wrong" in message, message
    assert pages.PASSWORD_ENV in message and "give its password" not in message, message
    assert "guess" not in message, "the password itself is never in a message"
    assert len(list(pages.load_pages(locked, "locked.pdf", pages.PagesConfig(pdf_password="s3cret")))) == 1
