"""DreamBooth on the committed drawing model: a hundred steps teach it the subject, and the prior term
keeps the class. These fail if training does nothing (the UNet unchanged, the wrong parameters trained)
or the prior term is dropped. Judged by the committed small CLIP and DINO (inkbooth.drawing).

The runs are seeded, so a figure moves only when the code or the models do; the margins are set
well inside what was measured on the committed models (the numbers beside each constant).
"""

from __future__ import annotations

import pytest

from inkbooth import drawing
from inkbooth.drawing import domain, subjects
from inkbooth.dreambooth import prior, train
from inkbooth.dreambooth.evaluate import EvaluateConfig, evaluate_dreambooth, read_evaluation

PROMPTS = ["a photo of {identifier} {cls}", "a photo of {identifier} {cls} on a light blue background",
           "a photo of {identifier} {cls} on a dark gray background", "a photo of {identifier} {cls} at the top left"]
STEPS = 100
JUDGED = [60, 80, 100]  # snapshots every 20 steps; each run is judged by its last three kept steps
SEEDS = (0, 1, 2)
FIGURES = ("dino", "clip_i", "clip_t", "class_similarity", "class_diversity", "class_subject_dino")
# A single step of a prior-preservation run swings (seed 1's DINO went 0.61, 0.40, 0.65 at steps 60, 80,
# 100): the figures are the mean over JUDGED, and the text encoder is trained too, which binds the
# identifier more steadily than the UNet alone (measured both ways). Measured on the committed models
# (2026-12-06; Xeon, avx512f, avx512_vnni, amx_int8), against the base model's DINO 0.462 and CLIP-I
# 0.338: DINO rose by 0.083 / 0.092 / 0.188 on seeds 0 / 1 / 2 (mean 0.121), CLIP-I by 0.053 / 0.082 / 0.113.
MIN_DINO_RISE = 0.03
MIN_MEAN_DINO_RISE = 0.06
MIN_CLIP_I_RISE = 0.02
# Seed 0 with and without the prior term: class pictures against the base model's 0.778 / 0.400,
# their DINO cosine to the subject 0.412 / 0.709 (the base model's: 0.334).
MIN_CLASS_SIMILARITY_GAP = 0.15
MIN_DRIFT_GAP = 0.10


def _model(name: str) -> str:
    try:
        return str(drawing.path(name))
    except FileNotFoundError:
        pytest.skip(f"{name} is not trained here (inkbooth drawing train {name})")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per run (prior preservation per seed, and seed 0 without it): the base model's row and the mean of
    the JUDGED steps' figures."""
    root = tmp_path_factory.mktemp("fidelity")
    base, clip, dino = _model("shapes"), _model("shapes-clip"), _model("shapes-dino")
    (root / "subject").mkdir()
    for i, img in enumerate(subjects.pictures(4)):
        img.save(root / "subject" / f"{i}.png")
    class_set = prior.generate_prior_images(base, str(root / "prior"), prior.PriorConfig(
        class_prompt=domain.class_prompt(), num_images=16, guidance_scale=4.0, batch_size=8))["uri"]
    judge = EvaluateConfig(clip_model=clip, dino_model=dino, prompt_set="custom", prompts=PROMPTS,
                           images_per_prompt=4, class_images=8, guidance_scale=4.0,
                           only_steps=JUDGED)
    out = {}
    for name, seed, with_prior in [(f"seed-{s}", s, True) for s in SEEDS] + [("no-prior", 0, False)]:
        cfg = train.TrainConfig(instance_prompt=domain.instance_prompt(), class_prompt=domain.class_prompt(),
                                max_train_steps=STEPS, learning_rate=1e-4, train_batch_size=2, random_flip=True,
                                train_text_encoder=True, snapshot_every=20, seed=seed,
                                with_prior_preservation=with_prior)
        train.train_dreambooth(base, str(root / "subject"), str(root / name / "trained"), cfg,
                               class_images=class_set if with_prior else None, checkpoints=str(root / name / "ckpt"))
        evaluate_dreambooth(str(root / name / "trained"), str(root / name / "evaluation"), judge)
        rows = read_evaluation(str(root / name / "evaluation"))["rows"]
        assert [r["step"] for r in rows[1:]] == JUDGED, rows
        out[name] = {"base": rows[0], "trained": {k: sum(r[k] for r in rows[1:]) / len(JUDGED) for k in FIGURES}}
    return out


def test_a_few_dozen_steps_raise_subject_fidelity_on_every_seed(runs):
    rises = {s: {m: round(runs[f"seed-{s}"]["trained"][m] - runs[f"seed-{s}"]["base"][m], 4) for m in ("dino", "clip_i")}
             for s in SEEDS}
    assert all(r["dino"] >= MIN_DINO_RISE and r["clip_i"] >= MIN_CLIP_I_RISE for r in rises.values()), rises
    assert sum(r["dino"] for r in rises.values()) / len(SEEDS) >= MIN_MEAN_DINO_RISE, rises


def test_without_the_prior_term_the_class_drifts_to_the_subject(runs):
    with_prior, without = runs["seed-0"]["trained"], runs["no-prior"]["trained"]
    assert with_prior["class_similarity"] - without["class_similarity"] >= MIN_CLASS_SIMILARITY_GAP, (with_prior, without)
    assert without["class_subject_dino"] - with_prior["class_subject_dino"] >= MIN_DRIFT_GAP, (with_prior, without)
