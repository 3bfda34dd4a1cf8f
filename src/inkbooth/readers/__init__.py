"""The small readers: tiny TrOCR models, trained from scratch on synthetic lines, meant to read printed lines.

Each is a real ``VisionEncoderDecoderModel`` (ViT encoder, TrOCR decoder) with a ``TrOCRProcessor``,
so it loads like ``microsoft/trocr-base-printed`` through the same code (a folder works wherever a
hub id does) and exports to ONNX behind the same parity gate. Each is made by
``inkbooth.ocr.training.finetune`` from the recipe in its folder:

* ``latin``: printable ASCII, in Pillow's bundled font (the demo documents'): the demo and the tests
  that must read use it;
* ``cyrillic``: Russian, in Debian's DejaVu Sans, to show that another alphabet and tokenizer go
  through the same stage end to end.

A reader's folder holds the checkpoint, ``recipe.yaml`` (base shape and fine-tuning stages),
``training.json`` (its last stage's config, metrics and held-out history) and a manifest (content
hashes; lineage with every stage's schedule, time and held-out CER), so ``inkbooth.artifacts.fetch``
verifies it like any other artifact. The README's Readers section has the measured curves.

``inkbooth reader train NAME`` (``make reader-NAME``) makes one again: it builds the base model from
the recipe, runs its stages (each resuming its own checkpoints if interrupted) and installs the
result here. ``inkbooth reader path NAME`` prints the folder, a MODEL for every OCR command.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

NAMES = ("latin", "cyrillic")
HERE = Path(__file__).resolve().parent
RECIPE = "recipe.yaml"

log = logging.getLogger(__name__)


def path(name: str) -> Path:
    """The folder of reader ``name`` (a model source for OCR, export and further fine-tuning)."""
    if name not in NAMES:
        raise ValueError(f"unknown reader {name!r}; known: {', '.join(NAMES)}")
    folder = HERE / name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"reader {name!r} is not built here ({folder}); make reader-{name} trains it")
    return folder


def recipe(name: str) -> dict[str, Any]:
    """The base shape and fine-tuning config that reader ``name`` is made with."""
    import yaml

    return yaml.safe_load((HERE / name / RECIPE).read_text(encoding="utf-8"))


def _with_fonts(synthetic: dict[str, Any], fonts_dir: Path) -> dict[str, Any]:
    """Font and word-list names resolved in the fonts folder ('default' stays Pillow's font)."""
    out = dict(synthetic)
    out["fonts"] = [f if f == "default" else str(fonts_dir / f) for f in synthetic["fonts"]]
    if synthetic.get("word_list"):
        out["word_list"] = str(fonts_dir / synthetic["word_list"])
    return out


def stages(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The fine-tuning stages of a recipe: ``finetune`` is one config, or a list of them, each given as
    its changes to the one before (its ``synthetic`` too); stage k starts from stage k-1's output."""
    given = spec["finetune"] if isinstance(spec["finetune"], list) else [spec["finetune"]]
    out: list[dict[str, Any]] = []
    for changes in given:
        prev = out[-1] if out else {}
        merged = {**prev, **changes}
        if "synthetic" in changes and "synthetic" in prev:
            merged["synthetic"] = {**prev["synthetic"], **changes["synthetic"]}
        out.append(merged)
    return out


def train(name: str, fonts_dir: str | Path = ".inkbooth/fonts", workdir: str | Path = ".inkbooth/readers",
          threads: int = 0) -> Path:
    """Make reader ``name`` from its recipe and install it in the package; returns its folder.

    Each stage resumes its own checkpoints if interrupted; a stage whose output is published from
    the same starting model with the same config (up to fields that do not change the weights, such
    as threads and evaluation settings) is not run again. ``threads`` overrides the recipe's.
    """
    from inkbooth import artifacts, config, tiny
    from inkbooth.ocr.training.finetune import FinetuneConfig, finetune_trocr, identity

    spec = recipe(name)
    work = Path(workdir) / name
    base_cfg = config.from_dict(tiny.TinyTrOCRConfig, {**tiny.dataclasses.asdict(tiny.READER_SHAPE), **spec["base"]},
                                source=f"{name}/{RECIPE}: base")
    source = str(tiny.build_tiny_trocr(work / "base", base_cfg))
    outputs: list[str] = []
    for k, stage in enumerate(stages(spec), start=1):
        ft = {**stage, "synthetic": _with_fonts(stage["synthetic"], Path(fonts_dir).absolute()), "resume": "latest",
              **({"threads": threads} if threads else {})}
        ft_cfg = config.from_dict(FinetuneConfig, ft, source=f"{name}/{RECIPE}: finetune stage {k}")
        output = str(work / ("trained" if k == 1 else f"trained-{k}"))
        outputs.append(output)
        if artifacts.is_published(output):
            done = artifacts.read_manifest(output)
            if identity(done.config) == identity(config.to_dict(ft_cfg)) and done.lineage.get("base_model") == source:
                log.info("stage %d: %s is trained already", k, output)
                source = output
                continue
        finetune_trocr(source, output, ft_cfg, checkpoints=str(work / "checkpoints"))
        source = output
    return install(name, outputs, fonts_dir)


def _stage_summary(k: int, manifest: Any) -> dict[str, Any]:
    """What one stage did, for the reader's lineage: its schedule, lines, time and held-out CER."""
    cfg, m = manifest.config, manifest.metrics
    return {"stage": k, "steps": m.get("steps"), "learning_rate": cfg.get("learning_rate"),
            "ctc_weight": cfg.get("ctc_weight"), "max_chars": (cfg.get("synthetic") or {}).get("max_chars"),
            "seed": cfg.get("seed"), "train_seconds": m.get("train_seconds"), "synthetic_cer": m.get("synthetic_cer")}


def install(name: str, stage_outputs: list[str], fonts_dir: str | Path | None = None) -> Path:
    """Copy the last fine-tuning stage's checkpoint into the package as reader ``name``, with a
    manifest whose lineage lists every stage. Paths in the fonts folder are written as the file
    names the recipe uses, so nothing in the reader names the machine it was trained on."""
    import json

    from inkbooth import artifacts, storage
    from inkbooth.ocr.training.finetune import KIND
    from inkbooth.ocr.training.register import copy_checkpoint

    prefix = str(Path(fonts_dir).absolute()) + "/" if fonts_dir else None

    def portable(value: Any) -> Any:
        return json.loads(json.dumps(value).replace(prefix, "")) if prefix else value

    dest = HERE / name
    with storage.temp_dir("inkbooth-reader-") as tmp:
        work = Path(tmp)
        trained_manifest = copy_checkpoint(str(stage_outputs[-1]), work)
        if prefix:
            record = work / "training.json"
            record.write_text(record.read_text(encoding="utf-8").replace(prefix, ""), encoding="utf-8")
        history = [_stage_summary(k, artifacts.read_manifest(str(out))) for k, out in enumerate(stage_outputs, 1)]
        shutil.copy2(dest / RECIPE, work / RECIPE)
        # Published in place, not as a version under .inkbooth-versions/: package data is found by its
        # file names. The old folder steps aside and comes back if the publish fails.
        old = dest.with_name(f".{name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        try:
            artifacts.publish(work, str(dest), kind=KIND, name=f"reader-{name}",
                              inputs={**trained_manifest.inputs, "trained": trained_manifest.content_hash},
                              config=portable(trained_manifest.config), metrics=trained_manifest.metrics,
                              lineage=portable({**trained_manifest.lineage, "stages": history}))
        except BaseException:
            if not dest.exists():
                old.rename(dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    return dest
