"""`variant: auto` takes the variant the export measured fastest within its CER budget (issue 21, item 2)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from inkbooth import artifacts
from inkbooth.ocr.recognition import export, variants
from inkbooth.ocr.recognition.exported import auto_variant, choose_variant, cpu_features
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer, resolve_model


@pytest.fixture(scope="module")
def measured(tiny_trocr, tmp_path_factory):
    """The tiny TrOCR exported with its CPU variants timed (one round on 4 parity lines)."""
    out = tmp_path_factory.mktemp("variant-choice") / "onnx"
    cfg = export.ExportConfig(parity_images=4, parity_num_beams=2, parity_max_new_tokens=8, max_int8_cer=1.0,
                              variant_rounds=1, threads=1)
    return out, export.export_trocr(str(tiny_trocr), str(out), cfg)


def _recorded(measured, tmp_path, choice: str | None):
    """A copy of the export whose record says ``choice`` (None: no record, as an export from before it)."""
    src, _ = measured
    out = tmp_path / "onnx"
    shutil.copytree(src, out)
    data = json.loads((out / artifacts.MANIFEST).read_text())
    if choice is None:
        data["metrics"].pop("variants")
    else:
        data["metrics"]["variants"].update(choice=choice, why=f"{choice}: said so for the test")
    (out / artifacts.MANIFEST).write_text(json.dumps(data))
    return out


def test_the_export_records_each_cpu_variant_timed_and_why(measured):
    out, manifest = measured
    record = manifest.metrics["variants"]
    assert record["device"] == "cpu" and record["choice"] in ("fp32", "int8")
    assert record["why"].startswith(f"{record['choice']}: ")
    assert record["cpu_features"] == cpu_features() and record["onnxruntime"]
    assert record["num_beams"] == RecognizeConfig().num_beams and record["lines"] == 4 and record["threads"] == 1
    assert record["cer_against"] == "labels" and record["cer_margin"] == export.ExportConfig().variant_cer_margin
    for variant in ("fp32", "int8"):
        m = record["measured"][variant]
        assert m["cpu_s_per_line"] > 0 and m["cer"] >= 0 and m["cer_vs_fp32"] >= 0, variant
    assert record["measured"]["fp32"]["speedup"] == 1.0 and record["measured"]["fp32"]["cer_vs_fp32"] == 0
    assert record["measured"]["fp16"] == {"measured": False, "why": "fp16 runs on CUDA; this record is for CPU"}
    parity = json.loads(artifacts.read_text(str(out), "parity.json"))
    assert parity["metrics"]["variants"] == record


@pytest.mark.parametrize("choice", ["fp32", "int8"])
def test_auto_reads_the_recorded_choice(measured, tmp_path, caplog, choice):
    out = _recorded(measured, tmp_path, choice)
    with caplog.at_level(logging.INFO, logger="inkbooth.ocr.recognition.exported"):
        rec = Recognizer(out, RecognizeConfig(device="cpu", threads=1))
    assert rec.config.variant == choice and rec.root.name == choice
    assert rec.read([]) == []
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("variant auto:")]
    assert said == [f"variant auto: {choice} on cpu (measured at export: {choice}: said so for the test)"]
    config = RecognizeConfig(device="cpu")  # a worker settles auto from the manifest, then fetches that variant
    folder, _ = resolve_model(str(out), config)
    assert config.variant == choice and (folder / choice).is_dir()


def test_an_export_without_the_record_keeps_the_old_rule(measured, tmp_path, caplog):
    out = _recorded(measured, tmp_path, None)
    with caplog.at_level(logging.INFO, logger="inkbooth.ocr.recognition.exported"):
        assert Recognizer(out, RecognizeConfig(device="cpu", threads=1)).config.variant == "int8"
    assert "the export records no measured choice; the default rule: INT8 on CPU" in caplog.text
    assert choose_variant("auto", {"fp32", "int8", "fp16"}, "cuda") == "fp16"
    assert choose_variant("auto", {"fp32"}, "cpu") == "fp32"


def test_the_record_holds_for_its_device_and_says_what_this_cpu_lacks():
    record = {"device": "cpu", "choice": "fp32", "why": "fp32: int8 costs too much", "cpu_features": ["avx2", "avx512_vnni"]}
    everything = {"fp32", "int8", "fp16"}
    name, why = auto_variant(everything, "cpu", record, features=["avx2"])
    assert name == "fp32" and "this CPU lacks avx512_vnni, which the export's machine had" in why
    assert "lacks" not in auto_variant(everything, "cpu", record, features=["avx2", "avx512_vnni", "amx_int8"])[1]
    name, why = auto_variant(everything, "cuda", record)  # measured on CPU: CUDA keeps fp16
    assert name == "fp16" and "measured its variants on cpu, not cuda" in why
    name, why = auto_variant({"fp32", "int8"}, "cpu", {**record, "choice": "fp16"})
    assert name == "int8" and "not among" in why
    assert auto_variant(everything, "cpu", "not a record")[0] == "int8"
    assert choose_variant("fp32", everything, "cpu", {**record, "choice": "int8"}) == "fp32"  # asked for: kept


def _m(seconds: float, cer: float, speedup: float = 1.0) -> dict:
    return {"cpu_s_per_line": seconds, "cer": cer, "cer_vs_fp32": cer, "speedup": speedup}


def test_the_fastest_variant_within_the_cer_budget_is_chosen_if_the_speedup_is_real():
    cfg = export.ExportConfig(variant_cer_margin=0.002, variant_min_speedup=1.1)
    fp32 = _m(0.02, 0.0018)
    # The reader: INT8 adds 0.0059 CER to save 1.2x: fp32.
    choice, why = variants.pick_variant({"fp32": fp32, "int8": _m(0.0167, 0.0077, 1.2)}, ["fp32", "int8"], cfg, "labels")
    assert choice == "fp32" and "int8's CER 0.0077 is over the budget (fp32's 0.0018 + 0.002)" in why
    choice, why = variants.pick_variant({"fp32": fp32, "int8": _m(0.019, 0.0020, 1.05)}, ["fp32", "int8"], cfg, "labels")
    assert choice == "fp32" and "only 1.05x fp32's speed, under the 1.1x a switch needs" in why
    choice, why = variants.pick_variant({"fp32": fp32, "int8": _m(0.01, 0.0030, 2.0)}, ["fp32", "int8"], cfg, "labels")
    assert choice == "int8" and why.startswith("int8: 2.00x fp32's speed") and "within the budget" in why
    # Lines without true texts: the budget is on CER against fp32's text.
    choice, why = variants.pick_variant({"fp32": {**fp32, "cer_vs_fp32": 0.0}, "int8": _m(0.01, 0.001, 2.0)},
                                      ["fp32", "int8"], cfg, "fp32")
    assert choice == "int8" and "CER against fp32's text 0.0010" in why


def test_variant_options_are_checked():
    with pytest.raises(ValueError, match="variant_min_speedup"):
        export.ExportConfig(variant_min_speedup=0.9).validate()
    with pytest.raises(ValueError, match="variant_cer_margin"):
        export.ExportConfig(variant_cer_margin=2.0).validate()
    with pytest.raises(ValueError, match="variant_rounds"):
        export.ExportConfig(variant_rounds=-1).validate()
