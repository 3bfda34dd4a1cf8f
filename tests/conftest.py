"""Shared fixtures: a real SeaweedFS S3 server, the tiny TrOCR and its ONNX export."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from inkbooth import objectstore, storage
from inkbooth.ocr.recognition.export import ExportConfig, export_trocr

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / ".inkbooth" / "testdata"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS server on 127.0.0.1 for the whole session; its environment is set for everyone."""
    store = objectstore.EmbeddedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    with objectstore.environment(store.env()):
        yield store
    store.stop()


@pytest.fixture(autouse=True)
def no_pipeline_run_id(monkeypatch):
    """Every test starts outside a pipeline run: a component run in-process (``own_checkpoints``) sets
    ``INKBOOTH_RUN_ID`` for the rest of its process, which would make later tests' checkpoints owned."""
    monkeypatch.delenv("INKBOOTH_RUN_ID", raising=False)


@pytest.fixture(autouse=True, scope="session")
def fast_retries():
    storage.set_retry_policy(storage.RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, request_attempts=2))
    yield
    storage.set_retry_policy(storage.DEFAULT_RETRY)


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh bucket, as an s3:// URI."""
    uri = f"s3://test-{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(uri)
    return uri


@pytest.fixture(scope="session")
def tiny_trocr(tmp_path_factory) -> Path:
    from inkbooth import tiny

    return tiny.build_tiny_trocr(tmp_path_factory.mktemp("tiny") / "tiny-trocr")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_trocr, tmp_path_factory):
    """The tiny TrOCR exported (fp32, int8, fp16) with parity measured on 50 line images."""
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    # A random model's INT8 text drifts far more than a trained model's: see inkbooth.tiny.
    manifest = export_trocr(str(tiny_trocr), str(out), ExportConfig(parity_images=50, max_int8_cer=0.6))
    return out, manifest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from inkbooth import tiny

    return tiny.build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


@pytest.fixture(scope="session")
def subject_dir(tmp_path_factory) -> Path:
    from inkbooth.demo import subject_images

    folder = tmp_path_factory.mktemp("subject") / "images"
    subject_images(folder, 4)
    return folder


@pytest.fixture(scope="session")
def class_set(tiny_sd, tmp_path_factory) -> str:
    from inkbooth.dreambooth import prior

    out = tmp_path_factory.mktemp("prior") / "sets"
    cfg = prior.PriorConfig(class_prompt="a photo of dog", num_images=4, steps=4, batch_size=4)
    return prior.generate_prior_images(str(tiny_sd), str(out), cfg)["uri"]


@pytest.fixture(scope="session")
def reader_exports(tmp_path_factory):
    """``get(name)``: committed reader ``name`` exported as ``inkbooth ocr`` exports a reader folder it
    is given (``reading_export``: the default parity gate and variant record, into a node cache), once
    per session and shared by every test that reads with a reader or checks its export."""
    from inkbooth import readers
    from inkbooth.ocr.recognition.export import reading_export

    cache = tmp_path_factory.mktemp("reader-cache")
    made: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in made:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("INKBOOTH_CACHE", str(cache))
                made[name] = reading_export(str(readers.path(name)))
        return made[name]

    get.cache = cache
    return get
