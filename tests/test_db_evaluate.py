"""The DreamBooth evaluation stage on tiny random models: snapshots, figures, determinism, selection."""

from __future__ import annotations

import json

import pytest

from inkbooth import artifacts
from inkbooth.dreambooth import fidelity, train
from inkbooth.dreambooth.evaluate import EvaluateConfig, evaluate_dreambooth, read_evaluation


@pytest.fixture(scope="module")
def judges_dir(tmp_path_factory):
    """A tiny random CLIP and a tiny random DINO ViT, saved as their hub counterparts are."""
    from inkbooth import tiny

    return tiny.build_tiny_judges(tmp_path_factory.mktemp("judges"))


@pytest.fixture(scope="module")
def snapshotted(tiny_sd, subject_dir, class_set, tmp_path_factory):
    """A 4-step run that keeps a snapshot every 2 steps: steps 2 and 4 can be judged."""
    out = tmp_path_factory.mktemp("snap") / "trained"
    cfg = train.TrainConfig(max_train_steps=4, learning_rate=1e-3, snapshot_every=2)
    train.train_dreambooth(str(tiny_sd), str(subject_dir), str(out), cfg, class_images=class_set,
                           checkpoints=str(out) + "-ckpt")
    return str(out)


def small(judges_dir, **kw):
    clip, dino = judges_dir
    return EvaluateConfig(**{"clip_model": str(clip), "dino_model": str(dino), "prompt_set": "custom",
                             "prompts": ["a photo of {identifier} {cls}", "a {identifier} {cls} on the beach"],
                             "images_per_prompt": 2, "class_images": 3, "steps": 3, **kw})


def test_the_run_keeps_snapshots_and_names_their_steps(snapshotted):
    manifest = artifacts.read_manifest(snapshotted)
    assert manifest.lineage["snapshot_steps"] == [2]
    files = {f.path for f in manifest.files}
    assert "snapshots/step-00000002/unet/diffusion_pytorch_model.safetensors" in files
    assert "snapshots/step-00000004/unet/diffusion_pytorch_model.safetensors" not in files  # the last is model/


def test_evaluation_judges_base_and_every_step_with_figures_in_range(snapshotted, judges_dir, tmp_path):
    m = evaluate_dreambooth(snapshotted, str(tmp_path / "ev"), small(judges_dir))
    record = read_evaluation(str(tmp_path / "ev"))
    assert [(r["step"], r["source"]) for r in record["rows"]] == [
        (0, "base"), (2, "snapshots/step-00000002"), (4, "model")]
    for row in record["rows"]:
        for name in fidelity.METRICS:
            assert -1.0 <= row[name] <= 2.0, (name, row)
    base = record["rows"][0]
    assert base["class_similarity"] == pytest.approx(1.0, abs=1e-4)  # the base against itself
    assert record["prompts"] == ["a photo of sks dog", "a sks dog on the beach"]
    assert record["selected"]["step"] == 4 and "select: last" in record["selected"]["reason"]
    assert m.metrics["selected_step"] == 4 and m.metrics["steps_judged"] == 2
    files = {f.path for f in m.files}
    assert {"grids/base.png", "grids/step-00000002.png", "grids/class-step-00000004.png"} <= files
    # The trained steps draw differently from the base (the weights changed), with the same noise.
    assert record["rows"][2]["class_similarity"] < 0.99999


def test_evaluation_is_deterministic(snapshotted, judges_dir, tmp_path):
    cfg = small(judges_dir, only_steps=[2])
    a = evaluate_dreambooth(snapshotted, str(tmp_path / "a"), cfg)
    b = evaluate_dreambooth(snapshotted, str(tmp_path / "b"), cfg)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_evaluation(str(tmp_path / "a"))["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_evaluation(str(tmp_path / "b"))["rows"]]
    assert {f.path: f.sha256 for f in a.files if f.path.endswith(".png")} == \
        {f.path: f.sha256 for f in b.files if f.path.endswith(".png")}


def test_only_steps_that_were_not_kept_are_refused(snapshotted, judges_dir, tmp_path):
    with pytest.raises(ValueError, match=r"step\(s\) \[3\] were not kept"):
        evaluate_dreambooth(snapshotted, str(tmp_path / "x"), small(judges_dir, only_steps=[3]))


ROWS = [{"step": 100, "dino": 0.50, "clip_t": 0.30}, {"step": 200, "dino": 0.62, "clip_t": 0.21},
        {"step": 300, "dino": 0.58, "clip_t": 0.27}, {"step": 400, "dino": 0.55, "clip_t": 0.26}]


@pytest.mark.parametrize(("kw", "step", "said"), [
    ({"select": "last"}, 400, "select: last"),
    ({"select": "best"}, 200, "highest 1*dino = 0.6200 among 4 of 4 steps"),
    ({"select": "best", "floors": {"clip_t": 0.25}}, 300, "among 3 of 4 steps meeting clip_t >= 0.25"),
    ({"select": "best", "metric": {"dino": 1.0, "clip_t": 1.0}}, 300, "1*dino + 1*clip_t = 0.8500"),
    ({"select": "best", "floors": {"clip_t": 0.9}}, 400, "no step met the floors (clip_t >= 0.9)"),
])
def test_selection_picks_the_step_and_says_why(kw, step, said):
    chosen = fidelity.select_step(ROWS, EvaluateConfig(**kw))
    assert chosen["step"] == step and said in chosen["reason"], chosen


def test_selection_ties_go_to_the_later_step():
    rows = [{"step": 1, "dino": 0.5}, {"step": 2, "dino": 0.5}]
    assert fidelity.select_step(rows, EvaluateConfig(select="best"))["step"] == 2


@pytest.mark.parametrize(("kw", "message"), [
    ({"metric": {"fid": 1.0}}, "unknown figure"),
    ({"floors": {"dino": 0.1, "lpips": 0.2}}, "unknown figure"),
    ({"prompt_set": "custom"}, "needs prompts"),
    ({"prompt_set": "custom", "prompts": ["a photo of {cls}"]}, "has no {identifier}"),
    ({"prompt_set": "custom", "prompts": ["a {identifier} {breed}"]}, "only {identifier} and {cls}"),
    ({"images_per_prompt": 0}, "images_per_prompt"),
])
def test_bad_evaluation_configs_are_refused(kw, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        EvaluateConfig(**kw).validate()


def test_the_paper_prompt_lists_fill_in_identifier_and_class():
    cfg = EvaluateConfig()
    assert len(cfg.prompt_templates()) == 25 and len(EvaluateConfig(prompt_set="live").prompt_templates()) == 25
    assert fidelity.fill(cfg.prompt_templates()[1], "sks", "dog") == "a sks dog in the snow"
    assert fidelity.fill(cfg.prompt_templates()[1], "", "dog") == "a dog in the snow"
    assert fidelity.class_noun("a photo of dog") == "dog" and fidelity.class_noun("a photo of dog", "puppy") == "puppy"
    assert json.dumps(cfg.prompt_templates())  # plain strings, for the record


def test_export_registers_the_selected_step_and_says_why(snapshotted, judges_dir, tmp_path):
    from safetensors.torch import load_file

    from inkbooth.dreambooth.export import ExportCheckpointConfig, export_checkpoint

    ev = str(tmp_path / "ev")
    evaluate_dreambooth(snapshotted, ev, small(judges_dir, select="best", only_steps=[2]))
    uri, version = export_checkpoint(snapshotted, str(tmp_path / "reg"), ExportCheckpointConfig(dtype="fp32"),
                                     evaluation=ev)
    assert version.lineage["selected_step"] == 2 and "step 2 has the highest 1*dino" in version.lineage["selection"]
    assert version.metrics["selected_step"] == 2 and version.metrics["steps"] == 4 and "dino" in version.metrics
    weights = "unet/diffusion_pytorch_model.safetensors"
    exported = load_file(artifacts.fetch(uri) / "diffusers" / weights)
    snapshot = load_file(artifacts.fetch(snapshotted) / "snapshots/step-00000002" / weights)
    last = load_file(artifacts.fetch(snapshotted) / "model" / weights)
    assert all((exported[k] == snapshot[k]).all() for k in snapshot)
    assert any((exported[k] != last[k]).any() for k in last)
    assert {"evaluation/evaluation.json", "evaluation/grids/step-00000002.png"} <= {f.path for f in version.files}

    # Without an evaluation the last step is exported, and an evaluation of another run is refused.
    _, plain = export_checkpoint(snapshotted, str(tmp_path / "reg2"), ExportCheckpointConfig(dtype="fp32"))
    assert "selected_step" not in plain.lineage
    other = tmp_path / "other-ev"
    import shutil

    shutil.copytree(ev, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["inputs"]["trained"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="judged another training artifact"):
        export_checkpoint(snapshotted, str(tmp_path / "reg3"), ExportCheckpointConfig(), evaluation=str(other))


def test_the_reports_show_a_row_per_step_the_selection_and_the_grids(snapshotted, judges_dir, tmp_path):
    from inkbooth.dreambooth.export import ExportCheckpointConfig, export_checkpoint
    from inkbooth.reports.dreambooth import dreambooth_report, evaluation_report

    ev = str(tmp_path / "ev")
    evaluate_dreambooth(snapshotted, ev, small(judges_dir, select="best"))
    page = evaluation_report(ev)
    html = page.html()
    chosen = read_evaluation(ev)["selected"]
    assert f"Registered: step {chosen['step']}." in html and "base model" in html
    assert html.count('class="fidelity-grid"') == 6  # subject and class grids of base, step 2, step 4
    uri, _ = export_checkpoint(snapshotted, str(tmp_path / "reg"), ExportCheckpointConfig(dtype="fp32"), evaluation=ev)
    version_page = dreambooth_report(uri).html()
    assert "Subject fidelity per step" in version_page and f"{chosen['step']} (selected)" in version_page
