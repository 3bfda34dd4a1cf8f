"""Pipelines by name, their run configs, compiling, and running them locally through kfp.local.

The same pipeline function is compiled for a cluster and executed by ``kfp.local.SubprocessRunner``
on a laptop: each step runs as a subprocess of this Python, in this environment, calling the same
library function it would call in its container.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inkbooth.config import option, to_dict
from inkbooth.sinks.settings import SinkConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass
class OCRRun:
    """Parameters of one OCR pipeline run."""

    model: str = option(help="TrOCR checkpoint: hub id, folder or s3:// URI")
    documents: str = option(help="prefix (s3:// or folder) of the documents to read")
    output: str = option(help="prefix (s3:// or folder) for per-document results and the merged results")
    num_shards: int = option(4, "parallel OCR shards (at most one per document)")
    ground_truth: str = option("", "prefix with <document>.txt transcripts, for CER in the report")
    export: dict[str, Any] = option({}, "export config (inkbooth.ocr.recognition.export.ExportConfig fields)")
    recognize: dict[str, Any] = option({}, "recognition config (inkbooth.ocr.recognition.recognizer.RecognizeConfig fields)")

    def validate(self) -> None:
        from inkbooth import config
        from inkbooth.ocr.recognition.export import ExportConfig
        from inkbooth.ocr.recognition.recognizer import RecognizeConfig

        # Check nested configs here, before any step starts, with the key that is wrong.
        config.from_dict(ExportConfig, self.export, source="export")
        config.from_dict(RecognizeConfig, self.recognize, source="recognize")
        pages = self.recognize.get("pages") or {}
        if isinstance(pages, dict) and pages.get("pdf_password"):
            raise config.ConfigError(
                "recognize.pages.pdf_password: a password in a run config becomes a pipeline parameter, shown in "
                "run logs and the KFP UI; give it as the INKBOOTH_PDF_PASSWORD environment variable instead "
                "(on a cluster, from a Kubernetes Secret)")
        if self.num_shards < 1:
            raise ValueError("num_shards must be at least 1")

    def arguments(self) -> dict[str, Any]:
        d = to_dict(self)
        # Steps may run elsewhere (another working directory, a container): local paths go absolute.
        # A model is only a path when it exists here; "owner/name" is a hub id.
        model = _absolute(d["model"]) if Path(d["model"]).exists() else d["model"]
        return {"model": model, "documents": _absolute(d["documents"]), "output": _absolute(d["output"]),
                "num_shards": d["num_shards"], "ground_truth": _absolute(d["ground_truth"]) if d["ground_truth"] else "",
                "export_config": d["export"], "recognize_config": d["recognize"]}


def _check_sinks(model_registries: list[SinkConfig], registry: str) -> None:
    from inkbooth import config, sinks

    try:
        sinks.reachable(model_registries, registry)
    except sinks.SinkError as e:
        raise config.ConfigError(f"model_registries: {e}") from None


def _absolute(uri: str) -> str:
    from inkbooth import storage

    return uri if storage.is_s3(uri) else str(Path(uri).expanduser().absolute())


@dataclasses.dataclass
class DreamBoothRun:
    """Parameters of one DreamBooth pipeline run."""

    base_model: str = option(help="Stable Diffusion 1.x: hub id, diffusers folder or s3:// URI")
    instance_images: str = option(help="prefix (s3:// or folder) with the 3-20 subject images")
    prior_output: str = option(help="prefix where class-image sets are kept (and reused by later runs)")
    registry: str = option(help="model registry root; the export becomes <registry>/<name>/vN")
    checkpoints: str = option("", "prefix for full-state training checkpoints (empty: beside the trained model)")
    prior_shards: int = option(2, "parallel class-image shards")
    prior: dict[str, Any] = option({}, "class images (inkbooth.dreambooth.prior.PriorConfig fields)")
    train: dict[str, Any] = option({}, "training (inkbooth.dreambooth.train.TrainConfig fields)")
    evaluate: dict[str, Any] = option({}, "subject fidelity of every kept step and the one registered "
                                          "(inkbooth.dreambooth.fidelity.EvaluateConfig fields)")
    export: dict[str, Any] = option({}, "export (inkbooth.dreambooth.export.ExportCheckpointConfig fields)")
    sample: dict[str, Any] = option({}, "samples (inkbooth.dreambooth.sample.SampleConfig fields)")
    model_registries: list[SinkConfig] = option([], "model registries the new version is also registered in "
                                                    "(inkbooth.sinks.SinkConfig: type mlflow or kubeflow, uri, ...)")

    def __post_init__(self) -> None:
        # One class prompt for both the class images and the prior loss.
        class_prompt = self.train.get("class_prompt", "a photo of dog")
        given = self.prior.get("class_prompt")
        if given is not None and given != class_prompt:
            from inkbooth.config import ConfigError

            raise ConfigError(f"prior.class_prompt {given!r} differs from train.class_prompt {class_prompt!r}")
        self.prior = {**self.prior, "class_prompt": class_prompt}

    def validate(self) -> None:
        from inkbooth import config
        from inkbooth.dreambooth.export import ExportCheckpointConfig
        from inkbooth.dreambooth.fidelity import EvaluateConfig
        from inkbooth.dreambooth.prior import PriorConfig
        from inkbooth.dreambooth.sample import SampleConfig
        from inkbooth.dreambooth.train import TrainConfig

        config.from_dict(PriorConfig, self.prior, source="prior")
        config.from_dict(TrainConfig, self.train, source="train")
        config.from_dict(EvaluateConfig, self.evaluate, source="evaluate").validate()
        config.from_dict(ExportCheckpointConfig, self.export, source="export")
        config.from_dict(SampleConfig, self.sample, source="sample")
        _check_sinks(self.model_registries, self.registry)
        if self.prior_shards < 1:
            raise ValueError("prior_shards must be at least 1")

    def arguments(self) -> dict[str, Any]:
        d = to_dict(self)
        model = _absolute(d["base_model"]) if Path(d["base_model"]).exists() else d["base_model"]
        return {"base_model": model, "instance_images": _absolute(d["instance_images"]),
                "prior_output": _absolute(d["prior_output"]), "registry": _absolute(d["registry"]),
                "checkpoints": _absolute(d["checkpoints"]) if d["checkpoints"] else "",
                "prior_shards": d["prior_shards"], "prior_config": d["prior"], "train_config": d["train"],
                "evaluate_config": d["evaluate"], "export_config": d["export"], "sample_config": d["sample"], "model_registries": d["model_registries"]}


@dataclasses.dataclass
class OCRTrainRun:
    """Parameters of one OCR fine-tuning run: data -> fine-tune -> export (parity gate) -> evaluate -> register."""

    base_model: str = option(help="TrOCR checkpoint to start from: hub id, folder, s3:// URI or a registry version")
    registry: str = option(help="model registry root; the result becomes <registry>/<name>/vN")
    data: str = option("", "prefix (s3:// or folder) of line images with labels.jsonl or labels.tsv (this, pdfs "
                           "or both)")
    pdfs: str = option("", "prefix (s3:// or folder) of born-digital PDFs: their text-layer lines, cropped and "
                           "labelled, are the training data (with data's lines besides, when both are given)")
    checkpoints: str = option("", "prefix for full-state training checkpoints (empty: beside the trained model)")
    pdf_lines: dict[str, Any] = option({}, "lines from the PDFs (inkbooth.ocr.training.pdflines.PdfLinesConfig "
                                           "fields: pages, holdout, augment, ...)")
    lines: dict[str, Any] = option({}, "data checks and split (inkbooth.ocr.training.lines.LinesConfig fields)")
    finetune: dict[str, Any] = option({}, "fine-tuning (inkbooth.ocr.training.finetune.FinetuneConfig fields)")
    export: dict[str, Any] = option({}, "export and parity gate (inkbooth.ocr.recognition.export.ExportConfig fields)")
    evaluate: dict[str, Any] = option({}, "held-out evaluation (inkbooth.ocr.training.evaluate.EvaluateConfig fields)")
    register: dict[str, Any] = option({}, "registration (inkbooth.ocr.training.register.RegisterConfig fields: name, ...)")
    model_registries: list[SinkConfig] = option([], "model registries the new version is also registered in "
                                                    "(inkbooth.sinks.SinkConfig: type mlflow or kubeflow, uri, ...)")

    def validate(self) -> None:
        from inkbooth import config
        from inkbooth.ocr.recognition.export import ExportConfig
        from inkbooth.ocr.training.evaluate import EvaluateConfig
        from inkbooth.ocr.training.finetune import FinetuneConfig
        from inkbooth.ocr.training.lines import LinesConfig
        from inkbooth.ocr.training.pdflines import PdfLinesConfig
        from inkbooth.ocr.training.register import RegisterConfig

        if not (self.data or self.pdfs):
            raise config.ConfigError("give data (labelled line images), pdfs (born-digital PDFs) or both")
        config.from_dict(PdfLinesConfig, self.pdf_lines, source="pdf_lines").validate()
        pages = self.pdf_lines.get("pages") or {}
        if isinstance(pages, dict) and pages.get("pdf_password"):
            raise config.ConfigError(
                "pdf_lines.pages.pdf_password: a password in a run config becomes a pipeline parameter, shown in "
                "run logs and the KFP UI; give it as the INKBOOTH_PDF_PASSWORD environment variable instead")
        config.from_dict(LinesConfig, self.lines, source="lines")
        config.from_dict(FinetuneConfig, self.finetune, source="finetune")
        config.from_dict(ExportConfig, self.export, source="export")
        config.from_dict(EvaluateConfig, self.evaluate, source="evaluate")
        config.from_dict(RegisterConfig, self.register, source="register")
        _check_sinks(self.model_registries, self.registry)

    def arguments(self) -> dict[str, Any]:
        d = to_dict(self)
        model = _absolute(d["base_model"]) if Path(d["base_model"]).exists() else d["base_model"]
        # The pipeline imports one prefix: the PDFs when there are any (the labelled lines then go along
        # as extra_lines), else the labelled lines.
        pdfs, data = (_absolute(d[k]) if d[k] else "" for k in ("pdfs", "data"))
        return {"base_model": model, "data": pdfs or data, "registry": _absolute(d["registry"]),
                "checkpoints": _absolute(d["checkpoints"]) if d["checkpoints"] else "",
                "data_format": "pdfs" if pdfs else "lines", "extra_lines": data if pdfs else "",
                "pdf_lines_config": d["pdf_lines"], "lines_config": d["lines"], "finetune_config": d["finetune"],
                "export_config": d["export"], "evaluate_config": d["evaluate"], "register_config": d["register"],
                "model_registries": d["model_registries"]}


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    name: str
    module: str  # holds build(cluster) and the default pipeline
    run_config: type
    yaml: str  # file name beside the pipeline module
    result_task: str  # the task whose "Output" is the run's result (KFP forbids pipeline outputs from
    # inside the dsl.ExitHandler that guards every task, so the run's result is read from this task)

    def load(self, cluster: Any = None) -> Callable[..., Any]:
        """The pipeline function, with ``cluster`` (a ClusterConfig) or the defaults."""
        return importlib.import_module(self.module).build(cluster)


PIPELINES = {
    "ocr": PipelineSpec("ocr", "inkbooth.pipelines.ocr", OCRRun, "ocr.yaml", "merge-ocr"),
    "dreambooth": PipelineSpec("dreambooth", "inkbooth.pipelines.dreambooth", DreamBoothRun, "dreambooth.yaml",
                               "export-model"),
    "ocr-train": PipelineSpec("ocr-train", "inkbooth.pipelines.ocr_train", OCRTrainRun, "ocr_train.yaml", "register"),
}


def get(name: str) -> PipelineSpec:
    try:
        return PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}") from None


def compile_pipeline(name: str, path: str | Path, cluster: Any = None) -> Path:
    """Compile a pipeline to KFP v2 IR YAML (with a ClusterConfig, or the defaults)."""
    from kfp import compiler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(get(name).load(cluster), str(path))
    if cluster is not None and not cluster.honours("optional_secret_env"):
        import yaml

        from inkbooth import backends

        spec, platform = yaml.safe_load_all(path.read_text())
        platform = backends.fit_platform_spec(platform, cluster.kfp.backend)
        path.write_text(yaml.safe_dump_all([spec, platform], sort_keys=True))
    return path


def packaged_yaml(name: str) -> Path:
    """The compiled YAML kept in the repository (and shipped in the package)."""
    import inkbooth.pipelines as pkg

    return Path(pkg.__file__).parent / get(name).yaml


def run_local(name: str, run: Any, pipeline_root: str | Path, verbose: bool = False,
              display: Any = None) -> Any:
    """Run a pipeline end to end with kfp.local in this environment; returns the run's result.

    It prints a line per task and each warning once (``inkbooth.runlog``); each task's output goes to
    ``<run folder>/logs/<task>.log``, printed in full with ``verbose``, its last lines if it fails.
    """
    import json

    from kfp import local

    from inkbooth import cluster, runlog

    spec = get(name)
    pipeline_root = Path(pipeline_root).absolute()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    # Steps are subprocesses: keep their threads in check on small machines.
    os.environ.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
    display = display if display is not None else runlog.Display(verbose=verbose)
    before = set(pipeline_root.iterdir())
    with runlog.capture(display, title=f"{name} pipeline"):
        try:
            # Here a failure is bad input or a bug, not a preempted node: no retries (kfp.local would
            # honour them, with their backoff). No KFP API either to name a failed task.
            spec.load(cluster.ClusterConfig().without_retries())(**run.arguments(), kfp_api="")
        except RuntimeError as e:
            raise RuntimeError(runlog.failure_message(display, e)) from e
    # kfp.local keeps each task's outputs in <root>/<pipeline>-<time>/<task>/executor_output.json.
    (folder,) = [p for p in set(pipeline_root.iterdir()) - before if p.is_dir()]
    outputs = json.loads((folder / spec.result_task / "executor_output.json").read_text())
    return outputs["parameterValues"]["Output"]
