"""The small readers: tiny TrOCR models, trained from scratch on synthetic lines, meant to read printed lines.

Each is a real ``VisionEncoderDecoderModel`` (ViT encoder, TrOCR decoder) with a ``TrOCRProcessor``,
so it loads like ``microsoft/trocr-base-printed`` through the same code (a folder works wherever a
hub id does) and exports to ONNX behind the same parity gate. Each is made by
``inkbooth.ocr.training.finetune`` from the recipe in its folder:

* ``latin``: printable ASCII, in Pillow's bundled font (the demo documents'): the demo and the tests
  that must read use it;
* ``cyrillic``: Russian, in Debian's DejaVu Sans, to show that another alphabet and tokenizer go
  through the same stage end to end;
* ``printed``: the Latin reader taught real documents: synthetic lines in many of Debian's fonts and
  lines cut from Debian's documentation PDFs (``documents.tsv``; those in ``tests/readset.tsv`` are
  held out and never trained on);
* ``printed-cyrillic``: the Cyrillic reader taught real documents the same way: synthetic lines in
  Debian's fonts that have Cyrillic and lines cut from Debian's Russian documentation PDFs (those in
  ``tests/readset-cyrillic.tsv`` are held out).

A recipe's ``base`` is a tiny model's shape, or ``{reader: NAME}``: start from that committed reader
(its content hash goes into the lineage). Its ``data`` names a list of PDFs (``documents``, fetched
by ``scripts/fetch-testdata.sh`` into ``documents_dir``) and how ``inkbooth.ocr.training.pdflines``
cuts them (``pdf_lines``): every stage then trains on those lines beside its synthetic ones. A stage
may give its own ``pdf_lines`` changes (more pages, say): it and the stages after it train on the
lines cut that way, published beside the first set.

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

NAMES = ("latin", "cyrillic", "printed", "printed-cyrillic")
HERE = Path(__file__).resolve().parent
RECIPE = "recipe.yaml"
DOCUMENTS = "documents.tsv"

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
          threads: int = 0, documents_dir: str | Path = ".inkbooth/documents") -> Path:
    """Make reader ``name`` from its recipe and install it in the package; returns its folder.

    Each stage resumes its own checkpoints if interrupted; a stage whose output is published from
    the same starting model with the same config (up to fields that do not change the weights, such
    as threads and evaluation settings) is not run again. ``threads`` overrides the recipe's.
    """
    from inkbooth import artifacts, config, tiny
    from inkbooth.ocr.training.finetune import FinetuneConfig, finetune_trocr, identity
    from inkbooth.ocr.training.lines import line_data_hash

    spec = recipe(name)
    work = Path(workdir) / name
    if "reader" in spec["base"]:
        source = str(path(spec["base"]["reader"]))
    else:
        base_cfg = config.from_dict(tiny.TinyTrOCRConfig, {**tiny.dataclasses.asdict(tiny.READER_SHAPE), **spec["base"]},
                                    source=f"{name}/{RECIPE}: base")
        source = str(tiny.build_tiny_trocr(work / "base", base_cfg))
    outputs: list[str] = []
    cut: dict[str, tuple[str, str]] = {}  # a stage's pdf_lines changes -> (its lines, their content hash), made once

    def lines_of(changes: dict[str, Any] | None) -> tuple[str, str]:
        key = config.config_hash(changes or {})
        if key not in cut:
            data = _lines(name, spec["data"], changes, Path(documents_dir) / name, work)
            cut[key] = data, line_data_hash(data)
        return cut[key]

    for k, stage in enumerate(stages(spec), start=1):
        stage = dict(stage)
        data, data_hash = lines_of(stage.pop("pdf_lines", None)) if spec.get("data") else (None, "")
        ft = {**stage, "synthetic": _with_fonts(stage["synthetic"], Path(fonts_dir).absolute()), "resume": "latest",
              **({"threads": threads} if threads else {})}
        ft_cfg = config.from_dict(FinetuneConfig, ft, source=f"{name}/{RECIPE}: finetune stage {k}")
        output = str(work / ("trained" if k == 1 else f"trained-{k}"))
        outputs.append(output)
        if artifacts.is_published(output):
            done = artifacts.read_manifest(output)
            if (identity(done.config) == identity(config.to_dict(ft_cfg)) and done.lineage.get("base_model") == source
                    and done.inputs.get("data", "") == data_hash):
                log.info("stage %d: %s is trained already", k, output)
                source = output
                continue
        finetune_trocr(source, output, ft_cfg, data=data, checkpoints=str(work / "checkpoints"))
        source = output
    return install(name, outputs, fonts_dir)


def documents(name: str) -> Path:
    """The list of PDFs reader ``name`` trains on (``scripts/fetch-testdata.sh DEST LIST`` fetches them)."""
    return HERE / name / DOCUMENTS


def lines_settings(data: dict[str, Any], changes: dict[str, Any] | None) -> dict[str, Any]:
    """How a stage cuts its lines: the recipe's ``data.pdf_lines`` with the stage's ``pdf_lines``
    changes (``pages`` merged key by key)."""
    settings = dict(data.get("pdf_lines") or {})
    if changes:
        merged = {**settings, **changes}
        if isinstance(changes.get("pages"), dict):
            merged["pages"] = {**(settings.get("pages") or {}), **changes["pages"]}
        settings = merged
    return settings


def _lines(name: str, spec: dict[str, Any], changes: dict[str, Any] | None, folder: Path, work: Path) -> str:
    """Labelled lines cut from the recipe's documents (all listed files must be in ``folder``) by its
    ``data.pdf_lines`` with a stage's ``changes``, made once: the published set is reused while its
    documents and settings are the same. The recipe's own settings publish ``lines``; a stage's
    changes ``lines-`` and a hash of the settings, so that no stage's set replaces another's."""
    from inkbooth import config, storage
    from inkbooth.ocr.training.pdflines import PdfLinesConfig, pdf_lines

    listed = [row.split("\t")[2].rsplit("/", 1)[-1] for row in documents(name).read_text(encoding="utf-8").splitlines()
              if row.strip() and not row.startswith("#")]
    missing = [f for f in listed if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"reader {name!r}: {len(missing)} of its {len(listed)} documents are not in {folder} "
                                f"(first: {missing[0]}); scripts/fetch-testdata.sh {folder} {documents(name)} fetches them")
    settings = lines_settings(spec, changes)
    cfg = config.from_dict(PdfLinesConfig, settings, source=f"{name}/{RECIPE}: data.pdf_lines")
    output = work / "lines"
    if settings != (spec.get("pdf_lines") or {}):
        output = work / f"lines-{config.config_hash(cfg)[:12]}"
    try:
        pdf_lines(str(folder), str(output), cfg)  # returns the published set when documents and settings are the same
    except storage.AlreadyExistsError:  # a set of other documents: this recipe's own, so it is cut again
        log.info("%s: the documents have changed since these lines were cut; cutting them again", output)
        stale = output.with_name(f".{output.name}.stale")
        shutil.rmtree(stale, ignore_errors=True)
        output.rename(stale)  # out of sight in one step, then removed
        shutil.rmtree(stale)
        pdf_lines(str(folder), str(output), cfg)
    return str(output)


def _stage_summary(k: int, manifest: Any) -> dict[str, Any]:
    """What one stage did, for the reader's lineage: its schedule, lines, time and held-out CER."""
    cfg, m = manifest.config, manifest.metrics
    return {"stage": k, "steps": m.get("steps"), "learning_rate": cfg.get("learning_rate"),
            "ctc_weight": cfg.get("ctc_weight"), "max_chars": (cfg.get("synthetic") or {}).get("max_chars"),
            "seed": cfg.get("seed"), "train_seconds": m.get("train_seconds"), "synthetic_cer": m.get("synthetic_cer"),
            "train_lines": m.get("train_lines"), "heldout_lines": m.get("heldout_lines"),
            "heldout_cer": m.get("heldout_cer")}


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
        for kept in (RECIPE, DOCUMENTS):  # the recipe, and the documents list where it has one
            if (dest / kept).is_file():
                shutil.copy2(dest / kept, work / kept)
        artifacts.publish_replacing(work, dest, kind=KIND, name=f"reader-{name}",
                                    inputs={**trained_manifest.inputs, "trained": trained_manifest.content_hash},
                                    config=portable(trained_manifest.config), metrics=trained_manifest.metrics,
                                    lineage=portable({**trained_manifest.lineage, "stages": history}))
    return dest
