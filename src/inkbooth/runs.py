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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inkbooth.config import option, to_dict

log = logging.getLogger(__name__)


@dataclasses.dataclass
class OCRRun:
    """Parameters of one OCR pipeline run."""

    model: str = option(help="TrOCR checkpoint: hub id, folder or s3:// URI")
    documents: str = option(help="prefix (s3:// or folder) of the documents to read")
    output: str = option(help="prefix (s3:// or folder) for per-document results and the merged results")
    num_shards: int = option(4, "parallel OCR shards (at most one per document)")
    ground_truth: str = option("", "prefix with <document>.txt transcripts, for CER in the report")
    export: dict[str, Any] = option({}, "export config (inkbooth.ocr.export.ExportConfig fields)")
    recognize: dict[str, Any] = option({}, "recognition config (inkbooth.ocr.recognize.RecognizeConfig fields)")

    def validate(self) -> None:
        from inkbooth import config
        from inkbooth.ocr.export import ExportConfig
        from inkbooth.ocr.recognize import RecognizeConfig

        # Check nested configs here, before any step starts, with the key that is wrong.
        config.from_dict(ExportConfig, self.export, source="export")
        config.from_dict(RecognizeConfig, self.recognize, source="recognize")
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


def _absolute(uri: str) -> str:
    from inkbooth import storage

    return uri if storage.is_s3(uri) else str(Path(uri).expanduser().absolute())


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    name: str
    function: str  # module:attribute
    run_config: type
    yaml: str  # file name beside the pipeline module

    def load(self) -> Callable[..., Any]:
        module, attr = self.function.split(":")
        return getattr(importlib.import_module(module), attr)


PIPELINES = {
    "ocr": PipelineSpec("ocr", "inkbooth.pipelines.ocr:ocr_pipeline", OCRRun, "ocr.yaml"),
}


def get(name: str) -> PipelineSpec:
    try:
        return PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}") from None


def compile_pipeline(name: str, path: str | Path) -> Path:
    """Compile a pipeline to KFP v2 IR YAML."""
    from kfp import compiler

    spec = get(name)
    path = Path(path)
    compiler.Compiler().compile(spec.load(), str(path))
    return path


def packaged_yaml(name: str) -> Path:
    """The compiled YAML kept in the repository (and shipped in the package)."""
    import inkbooth.pipelines as pkg

    return Path(pkg.__file__).parent / get(name).yaml


def run_local(name: str, run: Any, pipeline_root: str | Path) -> Any:
    """Run a pipeline end to end with kfp.local in this environment; returns the pipeline output."""
    from kfp import local

    spec = get(name)
    pipeline_root = Path(pipeline_root).absolute()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    # Our images are not named "python"; locally the image is not used at all.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    # Steps are subprocesses: keep their threads in check on small machines.
    os.environ.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
    task = spec.load()(**run.arguments())
    return task.output
