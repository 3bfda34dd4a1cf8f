"""The small drawing model, CLIP and DINO: trained here, on a synthetic domain, committed like the readers.

* ``shapes``: a Stable Diffusion 1.x pipeline of the real diffusers classes (``AutoencoderKL``,
  ``UNet2DConditionModel``, ``CLIPTextModel`` + ``CLIPTokenizer``, SD's scheduler settings), 64 x 64
  pixels through 16 x 16 x 4 latents, under 25 MB in fp32, that draws the domain of
  ``inkbooth.drawing.domain`` (one shaded object of 8 classes, 11 colours, 4 textures, on 8
  backgrounds, in 9 positions and 3 sizes) as its prompt says. It loads wherever an SD 1.x folder
  does: the base model of DreamBooth in the demo and tests, whose subject (``domain.SUBJECT``, a ball
  with a pattern the domain never shows) it has never seen.
* ``shapes-clip``: a ``CLIPModel`` (ViT image tower, text tower, same tokenizer), under 10 MB,
  trained contrastively on the same pictures and captions: it judges samples (zero-shot colour and
  class, CLIP-T, CLIP-I; ``inkbooth.drawing.evaluate``) in the drawing model's recipe and in the
  DreamBooth evaluation.
* ``shapes-dino``: a ``ViTModel`` (+ ``ViTImageProcessor``), under 10 MB, trained self-supervised on
  the same pictures as DINO was (``inkbooth.drawing.dino``): it loads as facebook/dino-vits16 does,
  for DreamBooth's DINO subject fidelity (the cosine of CLS embeddings), and tells the subject from
  other balls by colour and pattern.

Each lives in ``models/NAME/`` with ``recipe.yaml`` (the base shape and the stages), ``training.json``
(the last stage's config, figures and held-out history) and a manifest whose lineage lists every
stage's schedule, time and held-out figures. A recipe's stages are each given as their changes to
the one before (``StageConfig`` fields; ``train`` says what a stage trains) and each starts from the
one before's output. ``inkbooth drawing train NAME`` runs them: every stage resumes its own
checkpoints if interrupted, a stage published already from the same start with the same config (and
the same renderer, ``domain.fingerprint``) is not run again, and the last stage's model is installed here. ``inkbooth drawing path NAME`` prints
the folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

NAMES = ("shapes", "shapes-clip", "shapes-dino")
HERE = Path(__file__).resolve().parent / "models"
RECIPE = "recipe.yaml"
MAX_BYTES = {"shapes": 25_000_000, "shapes-clip": 10_000_000, "shapes-dino": 10_000_000}  # the ceilings, fp32 weights

log = logging.getLogger(__name__)


def _check(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown drawing model {name!r}; known: {', '.join(NAMES)}")


def path(name: str) -> Path:
    """The folder of model ``name`` (a drawing pipeline, the small CLIP or the small DINO)."""
    _check(name)
    folder = HERE / name
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"drawing model {name!r} is not built here ({folder}); "
                                f"`inkbooth drawing train {name}` trains it")
    return folder


def recipe(name: str) -> dict[str, Any]:
    """The base shape and training stages that model ``name`` is made with."""
    import yaml

    _check(name)
    return yaml.safe_load((HERE / name / RECIPE).read_text(encoding="utf-8"))


def stages(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A recipe's stages, each completed from the ones before it (a stage lists only its changes)."""
    out: list[dict[str, Any]] = []
    for changes in spec["stages"]:
        out.append({**(out[-1] if out else {}), **changes})
    return out


def build_base(spec: dict[str, Any], folder: Path) -> Path:
    """The recipe's untrained model at ``folder``, built once (a finished build records its shape)."""
    import json

    from inkbooth import config
    from inkbooth.drawing import build

    kinds = {"clip": (build.ClipShape, build.build_clip), "dino": (build.DinoShape, build.build_dino)}
    shape_of, make = kinds.get(spec.get("kind") or "", (build.DrawingShape, build.build_drawing))
    shape = config.from_dict(shape_of, spec.get("base") or {}, source=f"{RECIPE}: base")
    record = json.dumps(config.to_dict(shape), sort_keys=True)
    if (folder / "shape.json").is_file() and (folder / "shape.json").read_text() == record:
        return folder
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    make(tmp, shape)
    (tmp / "shape.json").write_text(record)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def run_stages(spec: dict[str, Any], work: str | Path, *, threads: int = 0, eval_clip: str | None = None,
               pool: str | Path | None = None, _on_step: Any = None) -> list[str]:
    """Run a recipe's stages under ``work`` (base model, stage outputs, checkpoints); their outputs.
    ``pool`` caches the rendered training pictures (default ``work/pool``; models of one domain share it).

    A stage whose output is published from the same starting model with the same config (up to fields
    that do not change the weights) is not run again; an interrupted one resumes its checkpoints.
    """
    from inkbooth import artifacts, config, models
    from inkbooth.drawing import domain
    from inkbooth.drawing.train import StageConfig, identity, train_stage

    work = Path(work)
    source = str(build_base(spec, work / "base"))
    outputs: list[str] = []
    for k, stage in enumerate(stages(spec), start=1):
        cfg = config.from_dict(StageConfig, {**stage, **({"threads": threads} if threads else {})},
                               source=f"{RECIPE}: stage {k}")
        output = str(work / f"stage-{k}")
        outputs.append(output)
        if artifacts.is_published(output):
            done = artifacts.read_manifest(output)
            if (identity(done.config) == identity(config.to_dict(cfg)) and done.lineage.get("domain") == domain.fingerprint()
                    and done.lineage.get("base_model_hash") == models.folder_hash(models.resolve(source))):
                log.info("stage %d (%s): %s is trained already", k, cfg.train, output)
                source = output
                continue
        log.info("stage %d (%s): %d steps from %s", k, cfg.train, cfg.max_steps, source)
        train_stage(source, output, cfg, cache=Path(pool) if pool else work / "pool", checkpoints=str(work / "checkpoints" / f"stage-{k}"),
                    eval_clip=eval_clip, _on_step=_on_step)
        source = output
    return outputs


def _eval_clip(spec: dict[str, Any]) -> str | None:
    """The committed CLIP a recipe's samples are judged by, if it is built; else None (said once)."""
    name = spec.get("eval_clip")
    if not name:
        return None
    try:
        return str(path(name))
    except FileNotFoundError:
        log.warning("the samples are not judged: %s is not built yet (`inkbooth drawing train %s`)", name, name)
        return None


def train(name: str, workdir: str | Path = ".inkbooth/drawing", threads: int = 0, first: int = 0) -> Path:
    """Make model ``name`` from its recipe and install it in the package; returns its folder.

    ``first`` > 0 runs and installs only the recipe's first stages (a usable model sooner); a later
    run of all of them goes on from there, the stages done already not run again."""
    spec = recipe(name)
    if first:
        spec = {**spec, "stages": spec["stages"][:first]}
    outputs = run_stages(spec, Path(workdir) / name, threads=threads, eval_clip=_eval_clip(spec),
                         pool=Path(workdir) / "pool")
    return install(name, outputs)


def _stage_summary(k: int, manifest: Any) -> dict[str, Any]:
    """What one stage did, for the model's lineage: its schedule, time and held-out figures."""
    cfg, m = manifest.config, manifest.metrics
    kept = ("steps", "train_seconds", "steps_per_second", "first_loss", "last_loss", "reconstruction_mse", "psnr_db",
            "heldout_loss", "class_accuracy", "colour_accuracy", "joint_accuracy", "samples_clip_t",
            "samples_clip_t_random", "samples_class_accuracy", "samples_colour_accuracy", "knn_class_accuracy",
            "knn_colour_accuracy", "subject_subject", "subject_purple_ball", "subject_other_ball")
    return {"stage": k, "train": cfg.get("train"), "learning_rate": cfg.get("learning_rate"),
            "batch_size": cfg.get("batch_size"), "seed": cfg.get("seed"), **{key: m[key] for key in kept if key in m}}


def install(name: str, stage_outputs: list[str]) -> Path:
    """Copy the last stage's model into the package as ``name``, with a manifest whose lineage lists
    every stage; the recipe stays beside it."""
    import json

    from inkbooth import artifacts, storage
    from inkbooth.drawing.train import TRAINING

    last = artifacts.read_manifest(stage_outputs[-1])
    source = artifacts.fetch(stage_outputs[-1])
    dest = HERE / name
    with storage.temp_dir("inkbooth-drawing-") as tmp:
        work = Path(tmp) / name
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("manifest.json", ".*"))
        shutil.copy2(dest / RECIPE, work / RECIPE)
        # Nothing in the model names the machine it was trained on: no work folder, the CLIP by name.
        portable = {"base_model": "", "eval_clip": recipe(name).get("eval_clip") or ""}
        record = json.loads((work / TRAINING).read_text(encoding="utf-8"))
        record["lineage"] = {**record.get("lineage", {}), **portable}
        (work / TRAINING).write_text(json.dumps(record, indent=1), encoding="utf-8")
        history = [_stage_summary(k, artifacts.read_manifest(out)) for k, out in enumerate(stage_outputs, 1)]
        artifacts.publish_replacing(work, dest, kind=last.kind, name=f"drawing-{name}",
                                    inputs={**last.inputs, "trained": last.content_hash}, config=last.config,
                                    metrics=last.metrics, lineage={**last.lineage, **portable, "stages": history})
    return dest
