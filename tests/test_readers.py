"""The committed readers (inkbooth.readers): small, verified, and they read.

Their lines are drawn fresh here (seeds the recipes never trained on), in the fonts and sizes each
reader was made for; the Latin reader's pages are the demo's, read through the whole pipeline in
tests/test_pipelines.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from inkbooth import artifacts, readers
from inkbooth.ocr.documents import synthetic
from inkbooth.ocr.recognition import export
from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer
from inkbooth.ocr.recognition.text import corpus_cer
from inkbooth.ocr.training import finetune, synth

FONTS = Path(".inkbooth/fonts")
MAX_BYTES = 10_000_000  # the ceiling for a committed reader's weights
CYRILLIC_MAX_CER = 0.05  # measured 0.023 on these lines (beam 4); its held-out CER is 0.038 (greedy, 10% random characters)


def _read(name: str, images: list, **config) -> list[str]:
    rec = Recognizer(readers.path(name), RecognizeConfig(backend="torch", token_boxes=False,
                                                         threads=2, **config))
    return [r.text for r in rec.read(images)]


@pytest.mark.parametrize("name", readers.NAMES)
def test_a_reader_is_small_verified_and_says_how_it_was_made(name):
    folder = readers.path(name)
    assert (folder / "model.safetensors").stat().st_size <= MAX_BYTES
    assert artifacts.fetch(str(folder)) == folder  # every file against the manifest's hashes
    manifest = artifacts.read_manifest(str(folder))
    assert manifest.name == f"reader-{name}"
    stages = readers.stages(readers.recipe(name))
    assert manifest.config["max_steps"] == stages[-1]["max_steps"]  # the recipe's last stage made it
    assert manifest.metrics["synthetic_cer"] == manifest.metrics["heldout_cer_headline"]
    assert [s["stage"] for s in manifest.lineage["stages"]] == list(range(1, len(stages) + 1))
    assert manifest.lineage["stages"][-1]["synthetic_cer"] == manifest.metrics["synthetic_cer"]
    names = [manifest.config["synthetic"]["word_list"], *manifest.config["synthetic"]["fonts"]]
    assert not [n for n in names if "/" in n], "font and word-list names as the recipe gives them, not paths"


def test_the_latin_reader_reaches_its_held_out_target():
    manifest = artifacts.read_manifest(str(readers.path("latin")))
    assert manifest.metrics["synthetic_cer"] <= 0.03, "held-out CER of its last stage, on its own training mix"


def test_the_latin_reader_reads_fresh_lines_in_the_demo_font():
    rng = random.Random(2026)
    pairs = [synthetic.line_images(1, seed=rng.randrange(10**9))[0] for _ in range(40)]
    texts = [t for _, t in pairs]
    read = _read("latin", [img for img, _ in pairs], num_beams=4)
    assert corpus_cer(read, texts) <= 0.05, list(zip(read, texts))[:5]


def test_the_default_export_gate_passes_on_the_latin_reader(tmp_path):
    """The gate's default thresholds (max_int8_cer 0.05, min_fp32_exact 0.98), on a model that reads:
    INT8's own CER against the lines' true text is measured beside fp32's."""
    m = export.export_trocr(str(readers.path("latin")), str(tmp_path / "onnx"),
                            export.ExportConfig(variants=["fp32", "int8"], threads=2))
    metrics = m.metrics
    assert metrics["fp32_beam_exact"] >= 0.98 and metrics["int8_cer_vs_fp32"] <= 0.05
    assert metrics["fp32_cer"] <= 0.08 and abs(metrics["int8_cer_delta"]) <= 0.02
    assert metrics["int8_bytes"] < 0.35 * metrics["fp32_bytes"]


def test_the_cyrillic_reader_reads_russian_lines():
    """Another script and tokenizer through the same stage: Russian words from hunspell-ru's list in
    DejaVu Sans (make fonts fetches both from Debian)."""
    spec = readers.stages(readers.recipe("cyrillic"))[-1]["synthetic"]
    cfg = synth.SynthConfig(**{**spec, "fonts": [str(FONTS / spec["fonts"][0])],
                               "word_list": str(FONTS / spec["word_list"]), "texts": {"words": 1.0}})
    lines = synth.LineSynth(cfg)
    rng = random.Random(2026)
    pairs = [lines.draw(rng) for _ in range(40)]
    texts = [t for _, t in pairs]
    assert all(any("а" <= c.lower() <= "я" for c in t) for t in texts if not t.isdigit())
    read = _read("cyrillic", [img for img, _ in pairs], num_beams=4)
    assert corpus_cer(read, texts) <= CYRILLIC_MAX_CER, list(zip(read, texts))[:5]



def test_the_cli_names_a_reader_folder(capsys):
    from inkbooth import cli

    assert cli.main(["reader", "path", "latin"]) == 0
    assert capsys.readouterr().out.strip() == str(readers.path("latin"))
    with pytest.raises(SystemExit) as e:
        cli.main(["reader", "path", "klingon"])
    assert e.value.code == 2 and "invalid choice: 'klingon'" in capsys.readouterr().err


def test_a_recipe_trains_in_stages_and_a_trained_stage_is_not_run_again(tmp_path, monkeypatch):
    """Two tiny stages, then the same recipe again with more threads and another evaluation setting:
    those do not change the weights, so nothing is trained again; a changed learning rate is."""
    import yaml

    here = tmp_path / "readers"
    (here / "latin").mkdir(parents=True)
    stage = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "synthetic_share": 1.0, "eval_every": 0,
             "synthetic_eval_lines": 2, "threads": 1,
             "synthetic": {"fonts": ["default"], "texts": {"invoice": 1.0}, "max_chars": 12}}
    recipe = {"base": {"tokenizer": "chars", "alphabet": ""}, "finetune": [stage, {"seed": 1}]}
    (here / "latin" / readers.RECIPE).write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(readers, "HERE", here)
    runs = []
    real = finetune.finetune_trocr
    monkeypatch.setattr(finetune, "finetune_trocr", lambda *a, **k: runs.append(a[1]) or real(*a, **k))
    work = tmp_path / "work"
    folder = readers.train("latin", FONTS, work)
    assert [Path(r).name for r in runs] == ["trained", "trained-2"]
    assert [s["stage"] for s in artifacts.read_manifest(str(folder)).lineage["stages"]] == [1, 2]
    recipe["finetune"][1]["synthetic_eval_lines"] = 4
    (here / "latin" / readers.RECIPE).write_text(yaml.safe_dump(recipe))
    readers.train("latin", FONTS, work, threads=2)
    assert len(runs) == 2, "threads and evaluation settings do not make a stage run again"
    recipe["finetune"][1]["learning_rate"] = 5e-4
    (here / "latin" / readers.RECIPE).write_text(yaml.safe_dump(recipe))
    readers.train("latin", FONTS, work)
    assert [Path(r).name for r in runs[2:]] == ["trained-2"], "a changed stage runs again, from the stage before"
