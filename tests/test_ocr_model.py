"""The tiny TrOCR, its ONNX export and the parity gate."""

from __future__ import annotations

import hashlib

import pytest

from inkbooth import artifacts, models, storage
from inkbooth.ocr.recognition import export, onnxfiles
from inkbooth.ocr.recognition.exported import DECODER_INIT, DECODER_STEP, ENCODER, ENGINE_FILES
from inkbooth.ocr.recognition.text import cer


def test_tiny_trocr_loads_like_trocr_base_printed(tiny_trocr):
    from transformers import (
        RobertaTokenizerFast,
        TrOCRForCausalLM,
        TrOCRProcessor,
        VisionEncoderDecoderModel,
        ViTModel,
    )

    model = VisionEncoderDecoderModel.from_pretrained(tiny_trocr)
    processor = TrOCRProcessor.from_pretrained(tiny_trocr)
    assert isinstance(model.encoder, ViTModel) and isinstance(model.decoder, TrOCRForCausalLM)
    assert isinstance(processor.tokenizer, RobertaTokenizerFast)
    assert model.config.decoder_start_token_id == processor.tokenizer.eos_token_id == 2
    # Encoder and decoder widths differ, as in trocr-base: the projection between them is exercised.
    assert model.config.encoder.hidden_size != model.config.decoder.d_model
    assert processor.tokenizer.decode(processor.tokenizer("Invoice 42").input_ids, skip_special_tokens=True) == "Invoice 42"


def test_tiny_build_is_deterministic(tiny_trocr, tmp_path):
    from inkbooth import tiny

    again = tiny.build_tiny_trocr(tmp_path / "again")
    for name in ("model.safetensors", "vocab.json", "merges.txt", "config.json"):
        assert hashlib.sha256((again / name).read_bytes()).digest() == hashlib.sha256((tiny_trocr / name).read_bytes()).digest(), name


def test_export_parity_on_50_images(tiny_onnx):
    out, manifest = tiny_onnx
    assert artifacts.read_manifest(str(out)).content_hash == manifest.content_hash
    out = artifacts.fetch(str(out))  # the files of the current version
    m = manifest.metrics
    assert m["parity_images"] >= 50 and m["num_beams"] == 4
    assert m["fp32_greedy_exact"] == 1.0, "ORT fp32 greedy tokens must equal PyTorch's"
    assert m["fp32_beam_exact"] == 1.0, "ORT fp32 beam-4 tokens must equal PyTorch's"
    assert m["int8_size_ratio"] <= 0.35
    assert m["int8_bytes"] < m["fp16_bytes"] < m["fp32_bytes"]
    # INT8 drifts from fp32 on a random model (inkbooth.tiny), by an amount fixed by the seed. Measured:
    # 0.2464 for this fixture (seed 0; the same in 2 runs), 0.0 to 0.31 across seeds 0-4 (2026-12,
    # x86-64 with AVX-512 VNNI, onnxruntime CPU). The band is that measurement +- 0.1 (a few lines of
    # 50 reading otherwise on another CPU, e.g. AVX2's saturating int8 products): 0 means the int8
    # text was not compared (or not quantised), and much more means the quantisation went wrong.
    assert 0.15 <= m["int8_cer_vs_fp32"] <= 0.35, m["int8_cer_vs_fp32"]
    for variant in ("fp32", "int8", "fp16"):
        for name in (ENCODER, *ENGINE_FILES, "config.json", "preprocessor_config.json", "vocab.json"):
            assert (out / variant / name).is_file(), f"{variant}/{name}"
    assert manifest.kind == "trocr-onnx" and manifest.inputs["model"]


def test_int8_graph_is_really_quantized(tiny_onnx):
    import onnx

    out = artifacts.fetch(str(tiny_onnx[0]))  # the current version's folder
    step = onnx.load(str(out / "int8" / DECODER_STEP)).graph
    ops = [n.op_type for n in step.node]
    # Weight products are INT8 (2 layers x 8 projections + the output projection; the cross-attention
    # key and value projections are in the init graph) ...
    assert ops.count("MatMulInteger") == 17 and "DynamicQuantizeLinear" in ops
    init_ops = [n.op_type for n in onnx.load(str(out / "int8" / DECODER_INIT)).graph.node]
    assert init_ops.count("MatMulInteger") == 5  # and the encoder-to-decoder projection
    assert "MatMulInteger" not in [n.op_type for n in onnx.load(str(out / "fp32" / DECODER_STEP)).graph.node]
    # ... attention's activation products stay float: nothing re-quantises the cached keys and values.
    assert ops.count("MatMul") == 8
    produced_by = {o: n for n in step.node for o in n.output}
    for node in step.node:
        if node.op_type == "DynamicQuantizeLinear":
            assert not node.input[0].startswith(("past.", "cross.")), node.name
            src = produced_by.get(node.input[0])
            assert src is None or src.op_type != "Softmax", f"{node.name} quantises attention probabilities"


def test_int8_attention_option_quantises_attention_too(tiny_onnx, tmp_path):
    import onnx

    out = artifacts.fetch(str(tiny_onnx[0]))
    onnxfiles.quantize_int8(out / "fp32", tmp_path / "int8", "avx2", per_channel=False, attention=True)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8" / DECODER_STEP)).graph.node]
    assert "MatMul" not in ops and ops.count("MatMulInteger") == 25


def test_export_refuses_to_publish_below_threshold(tiny_trocr, tmp_path):
    cfg = export.ExportConfig(variants=["fp32", "int8"], parity_images=16, max_int8_cer=0.0)
    with pytest.raises(export.ParityError, match=r"parity check failed: int8_cer_vs_fp32 = .* exceeds max_int8_cer = 0.0"):
        export.export_trocr(str(tiny_trocr), str(tmp_path / "out"), cfg)
    assert not artifacts.is_published(str(tmp_path / "out"))


def test_export_rerun_reuses_the_published_artifact(tiny_trocr, tiny_onnx, monkeypatch):
    out, manifest = tiny_onnx
    monkeypatch.setattr(onnxfiles, "export_optimum", lambda *a: pytest.fail("exported again"))
    again = export.export_trocr(str(tiny_trocr), str(out), export.ExportConfig(parity_images=50, max_int8_cer=0.6))
    assert again.content_hash == manifest.content_hash


def test_check_parity_names_each_failed_check():
    cfg = export.ExportConfig()
    failed = export.check_parity({"fp32_greedy_exact": 0.5, "fp32_beam_exact": 1.0, "int8_cer_vs_fp32": 0.2}, cfg)
    assert len(failed) == 2 and "fp32_greedy_exact" in failed[0] and "int8_cer_vs_fp32" in failed[1]


def test_cer():
    assert cer("abc", "abc") == 0.0
    assert cer("abd", "abc") == pytest.approx(1 / 3)
    assert cer("", "abcd") == 1.0
    assert cer("kitten", "sitting") == pytest.approx(3 / 7)


def test_model_sources(tiny_trocr, bucket, tmp_path):
    assert models.resolve(str(tiny_trocr)) == tiny_trocr
    storage.upload_dir(tiny_trocr, f"{bucket}/models/tiny")
    local = models.resolve(f"{bucket}/models/tiny")
    assert (local / "model.safetensors").read_bytes() == (tiny_trocr / "model.safetensors").read_bytes()
    assert models.resolve(f"{bucket}/models/tiny") == local, "cached by content"
    assert (local / ".complete").is_file()  # the cache's marker is not part of the model:
    assert models.folder_hash(local) == models.folder_hash(tiny_trocr) == models.fingerprint(str(tiny_trocr))[7:]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(models.ModelSourceError, match="pickle"):
        models.resolve(str(pickled))
    assert models.resolve(str(pickled), allow_pickle=True) == pickled
    with pytest.raises(models.ModelSourceError, match="not a local folder"):
        models.resolve("no such thing!")
    with pytest.raises(models.ModelSourceError, match="nothing stored"):
        models.resolve(f"{bucket}/models/missing")


def test_parity_lines_follow_what_the_model_folder_records(tiny_trocr, tmp_path):
    """Rendered parity lines are drawn like the model's training lines (its training.json), with the
    config's parity_* options over them; a model that records none gets the Latin default."""
    import json

    assert export.parity_style(tiny_trocr, export.ExportConfig()) is None  # no record: today's Latin lines
    folder = tmp_path / "model"
    folder.mkdir()
    synthetic = {"fonts": ["/elsewhere/Gone.ttf"], "alphabet": "abcdefghij 0123456789", "texts": {"chars": 1.0},
                 "min_size": 20, "max_size": 22}
    (folder / "training.json").write_text(json.dumps({"config": {"synthetic": synthetic}}))
    style = export.parity_style(folder, export.ExportConfig(fonts_dir=str(tmp_path / "no-fonts")))
    assert style.fonts == ["default"], "a missing font: Pillow's, which has every letter of this alphabet"
    assert style.sizes == [20, 21, 22] and "pseudo-words of the alphabet" in style.about
    _, texts = export._parity_set(None, 6, style)
    assert all(set(t) <= set(synthetic["alphabet"]) for t in texts)
    # The config names the script and fonts, for a model that records none (or over what it records).
    cyrillic = export.ExportConfig(parity_alphabet="абвгдежзийклмнопрстуфхцчшщыьэюя", parity_fonts=["DejaVuSans.ttf"])
    style = export.parity_style(tiny_trocr, cyrillic)
    assert [p.rsplit("/", 1)[-1] for p in style.fonts] == ["DejaVuSans.ttf"]
    _, texts = export._parity_set(None, 6, style)
    assert all(set(t) <= set(cyrillic.parity_alphabet + " ") for t in texts)
    with pytest.raises(ValueError, match="Gone.ttf .*Pillow's default font has no glyphs for 'абв.*make fonts"):
        export.parity_style(tiny_trocr, export.ExportConfig(parity_alphabet="абв", parity_fonts=["Gone.ttf"]))
    with pytest.raises(ValueError, match="Pillow's default font has no glyphs for 'абв'"):  # it would draw boxes
        export.parity_style(tiny_trocr, export.ExportConfig(parity_alphabet="абв"))
    m = export.export_trocr(str(tiny_trocr), str(tmp_path / "onnx"), export.ExportConfig(
        variants=["fp32"], parity_images=4, parity_fonts=["DejaVuSansMono.ttf"]))
    assert "DejaVuSansMono.ttf" in m.lineage["parity_lines"]


def test_ocr_with_a_checkpoint_that_fails_the_gate_fails_the_run(tiny_trocr, tmp_path, monkeypatch):
    """A checkpoint given to the onnx backend is exported through the default gate; the tiny random
    model's INT8 text drifts past it, so the run stops with the gate's message and caches nothing."""
    from inkbooth.ocr.batch.shard import recognize_documents
    from inkbooth.ocr.documents.synthetic import render_page

    monkeypatch.setenv("INKBOOTH_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    render_page(seed=2, max_lines=1, width=600, height=300).image.save(docs / "p.png")
    with pytest.raises(export.ParityError, match="export not published; parity check failed: "):
        recognize_documents(str(docs), str(tiny_trocr), str(tmp_path / "out"), progress=False)
    assert not [p for p in (tmp_path / "cache" / "onnx").iterdir() if not p.name.startswith(".")]
