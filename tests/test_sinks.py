"""Registry sinks (``inkbooth.sinks``): a registered version is also registered in MLflow and in the
Kubeflow Model Registry, with its properties and lineage, once however often the register step runs.

What runs for real and what does not:

* **MLflow**: a real ``mlflow server`` (the ``mlflow`` package that ``.[dev]`` installs), started here
  on 127.0.0.1 with a SQLite backend store and its artifact store on the suite's SeaweedFS. The
  DreamBooth versions are real exports of a 2-step training of the tiny Stable Diffusion.
* **Kubeflow Model Registry**: its server is a container that cannot run here. ``tests/mrfake.py``
  answers in its place and holds every request the sink's ``model-registry`` client makes to the
  server's published OpenAPI schema (``tests/data/model-registry-v0.3.8.openapi.yaml``); the tests
  fail on any request off the schema, and show that the check catches such requests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from inkbooth import artifacts, cluster, doctor, runs, sinks, storage, submit
from inkbooth.config import ConfigError, from_dict
from tests.conftest import REPO
from tests.mrfake import PREFIX, SCHEMA, FakeModelRegistry

# The pinned schema: kubeflow/model-registry at tag v0.3.8 (commit cc86b769e257714626e299330f8756720ef90935),
# api/openapi/model-registry.yaml (git blob 86f7702d159e390540531682d270bd16af889cf8), unchanged.
SCHEMA_SHA256 = "f4427a48ca2b63c99412f4537d1f8bafa8ae7ec688fd4aa7da8b9e0c25e05117"
TOKEN_ENV = "INKBOOTH_TEST_MR_TOKEN"

HAVE_MLFLOW_SERVER = all(importlib.util.find_spec(m) for m in ("mlflow", "flask", "sqlalchemy", "alembic"))
needs_mlflow = pytest.mark.skipif(not HAVE_MLFLOW_SERVER, reason="the MLflow tracking server is not installed "
                                  "(mlflow, in the dev extra: pip install -e '.[dev]')")
needs_model_registry = pytest.mark.skipif(importlib.util.find_spec("model_registry") is None,
                                          reason="the Kubeflow Model Registry client is not installed "
                                                 "(pip install -e '.[dev]' or 'inkbooth[model-registry]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- fixtures: a trained DreamBooth model, an MLflow server, a fake Model Registry ------------------


@pytest.fixture(scope="module")
def trained(tiny_sd, subject_dir, class_set, tmp_path_factory) -> Path:
    from inkbooth.dreambooth import train

    out = tmp_path_factory.mktemp("trained") / "run"
    train.train_dreambooth(str(tiny_sd), str(subject_dir), str(out),
                           train.TrainConfig(max_train_steps=2, learning_rate=1e-3), class_images=class_set,
                           checkpoints=str(out) + "-ckpt")
    return out


class MlflowServer:
    """``mlflow server`` on 127.0.0.1: SQLite store, artifacts proxied to a bucket of the suite's SeaweedFS.
    Started when the module starts and waited for by the first test that needs it (the MLflow tests
    come last), so that its start (imports and migrations, about 20 s of one core) overlaps the tests
    before them on the other core."""

    def __init__(self, s3_server, folder: Path):
        self.folder = folder
        self.artifacts_root = f"s3://mlflow-{uuid.uuid4().hex[:10]}/artifacts"
        storage.ensure_bucket(self.artifacts_root)
        port = free_port()
        env = {**os.environ, **s3_server.env(), "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
        self.log = (folder / "server.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
             "--artifacts-destination", self.artifacts_root, "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        self.ready = False

    def wait(self) -> tuple[str, str]:
        deadline = time.monotonic() + 300  # migrations on a busy 2-core machine take ~25 s
        while not self.ready:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    self.ready = r.status == 200
                    continue
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(self.folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        return self.url, self.artifacts_root

    def stop(self) -> None:
        # The group this fixture started: the CLI and its uvicorn. Killed, not asked: its graceful
        # shutdown took 15 s, and its SQLite store and bucket are this module's, thrown away after.
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()


@pytest.fixture(scope="module", autouse=True)
def mlflow_starting(request, s3_server, tmp_path_factory):
    """The module's MLflow server, starting (None where MLflow is not installed or no selected test needs it)."""
    wanted = any(item.module is request.module and "mlflow_server" in item.fixturenames
                 for item in request.session.items)
    if not (HAVE_MLFLOW_SERVER and wanted):
        yield None
        return
    server = MlflowServer(s3_server, tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(mlflow_starting) -> tuple[str, str]:
    """The MLflow server's URL and artifact root, once it answers."""
    if mlflow_starting is None:
        pytest.skip("the MLflow tracking server is not installed (mlflow, in the dev extra)")
    return mlflow_starting.wait()


@pytest.fixture
def fake_registry(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "test-token")
    with FakeModelRegistry(token="test-token") as fake:
        yield fake


def mlflow_client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def kubeflow_sink(fake: FakeModelRegistry, **kw) -> dict:
    return {"type": "kubeflow", "uri": fake.url, "name": "team-registry", "token_env": TOKEN_ENV,
            "storage_key": "inkbooth-s3", **kw}


def export(trained: Path, registry: str, name: str, sink_list: list) -> tuple[str, artifacts.Manifest]:
    """The DreamBooth export-and-register stage, as its component calls it."""
    from inkbooth.dreambooth.export import ExportCheckpointConfig, export_checkpoint

    return export_checkpoint(str(trained), registry, ExportCheckpointConfig(name=name, dtype="fp32", single_file=False),
                             sinks=sink_list)


def small_version(bucket: str, name: str, tmp_path: Path, **fields) -> tuple[str, artifacts.Manifest]:
    """A registered version shaped like a DreamBooth export (for the failure paths, without exporting)."""
    folder = tmp_path / f"version-{name}"
    (folder / "diffusers").mkdir(parents=True)
    (folder / "diffusers" / "model_index.json").write_text(json.dumps({"_diffusers_version": "0.39.0"}))
    (folder / "diffusers" / "weights.safetensors").write_bytes(os.urandom(64))
    reg = artifacts.Registry(f"{bucket}/models/registry")
    version, manifest = reg.register(name, folder, kind="dreambooth-export", metrics={"loss": 0.25, "steps": 2},
                                     lineage={"base_model_hash": "b" * 64, "instance_images_hash": "i" * 64},
                                     inputs={"trained": "t" * 64}, **fields)
    return reg.uri(name, version), manifest


def as_tags(props: dict) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in props.items()}


# ---- Kubeflow Model Registry: every request held to the published schema --------------------------


@needs_model_registry
def test_every_model_registry_request_validates_against_the_pinned_schema(trained, fake_registry, bucket):
    import diffusers

    fake = fake_registry
    registry = f"{bucket}/models/registry"
    uri, manifest = export(trained, registry, "orange-ball", [kubeflow_sink(fake)])
    assert fake.violations == []
    ops = fake.operations()
    for op in ("createRegisteredModel", "createModelVersion", "upsertModelVersionArtifact"):
        assert ops.count(op) == 1, (op, ops)
    (model,) = fake.models.values()
    (version,) = fake.versions.values()
    (artifact,) = fake.artifacts.values()
    assert model["name"] == "orange-ball" and version["name"] == "v1" and version["registeredModelId"] == model["id"]
    props = sinks.describe(uri, manifest).properties()
    custom = version["customProperties"]
    assert set(custom) == set(props)
    for key, value in props.items():
        kind = next(k for k in custom[key] if k != "metadataType")
        shown = custom[key][kind]
        assert (float(shown) if kind == "int_value" else shown) == value, key
    assert custom["lineage.base_model_hash"]["string_value"] == manifest.lineage["base_model_hash"]
    numeric = [k for k, v in manifest.metrics.items() if isinstance(v, float)]
    assert numeric and all("double_value" in custom[f"metrics.{k}"] for k in numeric), "metrics stay numbers"
    assert artifact["uri"] == f"{uri}/diffusers" and artifact["modelFormatName"] == "diffusers"
    assert artifact["modelFormatVersion"] == diffusers.__version__ and artifact["storageKey"] == "inkbooth-s3"
    assert fake.links[artifact["id"]] == version["id"]

    export(trained, registry, "orange-ball", [kubeflow_sink(fake)])  # the register step retried
    assert fake.violations == []
    assert [fake.operations().count(op) for op in ("createRegisteredModel", "createModelVersion",
                                                   "upsertModelVersionArtifact")] == [1, 1, 1]

    # A first attempt killed between the version and its artifact: the retry adds the artifact only.
    fake.artifacts.clear()
    fake.links.clear()
    sinks.register_version([kubeflow_sink(fake)], uri, manifest)
    assert fake.violations == []
    assert len(fake.versions) == 1 and len(fake.artifacts) == 1
    assert fake.operations().count("upsertModelVersionArtifact") == 2
    assert fake.operations().count("createModelVersion") == 1


@needs_model_registry
def test_a_fine_tuned_trocr_is_registered_as_a_transformers_checkpoint(fake_registry, bucket, tmp_path):
    """ocr-train's register stage (register_trocr), on a fine-tuning output shaped like one."""
    from inkbooth.ocr.training.register import RegisterConfig, register_trocr

    checkpoint = tmp_path / "trained"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "vision-encoder-decoder",
                                                        "transformers_version": "4.57.6"}))
    (checkpoint / "model.safetensors").write_bytes(os.urandom(128))
    trained = f"{bucket}/runs/trained"
    artifacts.publish(checkpoint, trained, kind="trocr-model", metrics={"cer": 0.031, "steps": 40},
                      lineage={"base_model": "microsoft/trocr-base-printed", "data_hash": "d" * 64},
                      inputs={"lines": "l" * 64}, overwrite=True)
    registry = f"{bucket}/models/registry"
    uri, manifest = register_trocr(trained, registry, RegisterConfig(name="invoices"),
                                   sinks=[kubeflow_sink(fake_registry)])
    register_trocr(trained, registry, RegisterConfig(name="invoices"), sinks=[kubeflow_sink(fake_registry)])
    assert fake_registry.violations == [] and uri == f"{registry}/invoices/v1"
    (version,) = fake_registry.versions.values()
    (artifact,) = fake_registry.artifacts.values()
    assert artifact["uri"] == uri, "the version folder is the checkpoint"
    assert (artifact["modelFormatName"], artifact["modelFormatVersion"]) == ("transformers", "4.57.6")
    custom = version["customProperties"]
    assert custom["metrics.cer"] == {"metadataType": "MetadataDoubleValue", "double_value": 0.031}
    assert custom["lineage.data_hash"]["string_value"] == "d" * 64
    assert custom["lineage.trained"]["string_value"] == trained
    assert custom["inkbooth.content_hash"]["string_value"] == manifest.content_hash


@needs_model_registry
def test_the_model_registry_refuses_to_take_another_content_under_a_registered_version(fake_registry, bucket,
                                                                                      tmp_path):
    uri, manifest = small_version(bucket, "conflicting", tmp_path)
    sinks.register_version([kubeflow_sink(fake_registry)], uri, manifest)
    with pytest.raises(sinks.SinkError, match=r"team-registry .*model conflicting version v1 is there with content "
                                              r"hash [0-9a-f]{12}\.\.\., not 000000000000.*Not overwritten"):
        sinks.register_version([kubeflow_sink(fake_registry)], uri, dataclasses.replace(manifest, content_hash="0" * 64))
    assert fake_registry.violations == [] and len(fake_registry.versions) == 1


def call(fake: FakeModelRegistry, method: str, path: str, body=None, token: str | None = "test-token",
         ctype: str = "application/json") -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(fake.url + path, data=data, method=method,
                                     headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                              **({"Content-Type": ctype} if data else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("method, path, body, token, expect", [
    ("POST", "/registered_models", {"description": "no name"}, "test-token", "'name' is a required property"),
    ("POST", "/model_versions", {"name": "v1"}, "test-token", "'registeredModelId' is a required property"),
    ("POST", "/model_versions", {"name": "v1", "registeredModelId": "1", "customProperties": {
        "steps": {"metadataType": "MetadataIntValue", "int_value": 2}}}, "test-token", "2 is not of type 'string'"),
    ("POST", "/model_versions", {"name": "v1", "registeredModelId": "1", "version": "v1"}, "test-token",
     "field 'version' is not in the schema"),
    ("POST", "/model_versions/1/artifacts", {"artifactType": "model-artifact", "uri": "s3://b/k",
                                             "modelFormat": "diffusers"}, "test-token",
     "field 'modelFormat' is not in the schema"),
    ("GET", "/registered_models?pageSize=1&sortOrder=UP", None, "test-token", "sortOrder='UP'"),
    ("GET", "/registered_model?title=x", None, "test-token", "query parameter 'title' is not declared"),
    ("GET", "/registered_models", None, None, "no bearer token"),
    ("GET", "/registered_models", None, "other", "wrong bearer token"),
    ("DELETE", "/registered_models", None, "test-token", "no such operation in the schema"),
    ("GET", "/registered_models", {"x": 1}, "test-token", "takes no body"),
])
def test_the_fake_catches_requests_off_the_schema(fake_registry, method, path, body, token, expect):
    """The check the other tests rely on really fails requests that are not what the server takes."""
    status = call(fake_registry, method, PREFIX + path, body, token)
    assert status in (400, 401, 404), status
    assert len(fake_registry.violations) == 1 and expect in fake_registry.violations[0], fake_registry.violations


def test_the_fake_accepts_what_the_schema_allows_and_answers_on_schema(fake_registry):
    assert call(fake_registry, "POST", PREFIX + "/registered_models", {"name": "m", "customProperties": {
        "n": {"metadataType": "MetadataIntValue", "int_value": "2"}}}) == 201
    assert call(fake_registry, "GET", PREFIX + "/registered_models?pageSize=1&orderBy=ID&sortOrder=ASC") == 200
    assert call(fake_registry, "GET", PREFIX + "/registered_model?name=nobody") == 404
    assert fake_registry.violations == []


def test_the_pinned_schema_is_the_published_one():
    from openapi_spec_validator import validate

    text = SCHEMA.read_bytes()
    assert hashlib.sha256(text).hexdigest() == SCHEMA_SHA256, "tests/data holds the v0.3.8 schema unchanged"
    spec = yaml.safe_load(text)
    validate(spec)  # a valid OpenAPI 3.0 document
    assert spec["info"]["version"] == "v1alpha3" and PREFIX in next(iter(spec["paths"]))


@needs_model_registry
def test_the_client_is_the_one_pinned_with_the_schema():
    import tomllib
    from importlib.metadata import version

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "model-registry==0.3.8" in extras["model-registry"] and version("model-registry") == "0.3.8"


# ---- failures, settings, doctor -------------------------------------------------------------------


@needs_mlflow
@needs_model_registry
def test_registries_that_do_not_answer_fail_the_register_stage_naming_each(trained, bucket):
    dead = free_port()
    sink_list = [{"type": "mlflow", "uri": f"http://127.0.0.1:{dead}", "name": "team-mlflow", "timeout": 5},
                 {"type": "kubeflow", "uri": f"http://127.0.0.1:{dead}", "name": "team-registry", "timeout": 5}]
    registry = f"{bucket}/models/registry"
    with pytest.raises(sinks.SinkError) as caught:
        export(trained, registry, "unanswered", sink_list)
    message = str(caught.value)
    assert message.startswith(f"unanswered v1 is registered at {registry}/unanswered/v1 but registering it in 2 of "
                              "2 model registries failed")
    assert f"team-mlflow (http://127.0.0.1:{dead})" in message and f"team-registry (http://127.0.0.1:{dead})" in message
    assert "A rerun of the register step registers it where it is missing" in message
    assert artifacts.Registry(registry).versions("unanswered") == ["v1"], "the S3 registry stays the source of truth"


@pytest.mark.parametrize("entry, message", [
    ({"type": "mlflow", "uri": "http://user:secret@mlflow:5000"}, "credentials in the URL"),
    ({"type": "mlflow", "uri": "mlflow:5000"}, "is not an http(s):// URL"),
    ({"type": "kubeflow", "uri": "http://registry:8080/api/model_registry"}, "scheme://host[:port] only"),
    ({"type": "wandb", "uri": "http://x"}, "expected one of 'mlflow' | 'kubeflow'"),
    ({"type": "mlflow", "uri": "http://x", "token_env": "MY TOKEN"}, "not an environment variable name"),
    ({"type": "mlflow", "uri": "http://x", "token": "abc"}, "unknown key(s) 'token'"),
])
def test_sink_settings_are_checked(entry, message):
    with pytest.raises(ConfigError) as caught:
        sinks.parse([entry])
    assert message in str(caught.value)


def test_the_same_registry_twice_is_refused_and_a_runs_entry_overrides_the_cluster_files():
    with pytest.raises(ConfigError, match="listed twice"):
        sinks.parse([{"type": "mlflow", "uri": "http://m:5000"}, {"type": "mlflow", "uri": "http://m:5000/"}])
    combined = sinks.combine([{"type": "mlflow", "uri": "http://m:5000"}, {"type": "kubeflow", "uri": "http://k:8080"}],
                             [{"type": "kubeflow", "uri": "http://k:8080", "storage_key": "mine"},
                              {"type": "mlflow", "uri": "http://other:5000"}])
    assert [(s.uri, s.storage_key) for s in combined] == [("http://m:5000", ""), ("http://k:8080", "mine"),
                                                          ("http://other:5000", "")]


def test_sinks_need_an_s3_registry(tmp_path):
    base = {"base_model": "x/y", "instance_images": "s3://b/i", "prior_output": "s3://b/p",
            "model_registries": [{"type": "mlflow", "uri": "http://m:5000"}]}
    with pytest.raises(ConfigError, match="model_registries: registry .* is a local path"):
        from_dict(runs.DreamBoothRun, {**base, "registry": str(tmp_path / "registry")})
    run = from_dict(runs.DreamBoothRun, {**base, "registry": "s3://b/models"})
    assert run.arguments()["model_registries"][0]["uri"] == "http://m:5000"


def test_cluster_sinks_reach_the_compiled_pipeline_and_their_tokens_the_register_steps(tmp_path):
    settings = from_dict(cluster.ClusterConfig, {
        "registry_secret": "inkbooth-registries",
        "model_registries": [{"type": "mlflow", "uri": "http://mlflow.mlflow.svc.cluster.local:5000",
                              "token_env": "MLFLOW_TRACKING_TOKEN"},
                             {"type": "kubeflow", "uri": "http://model-registry-service.kubeflow:8080"}]})
    for name, task in (("dreambooth", "exec-export-model"), ("ocr-train", "exec-register")):
        path = runs.compile_pipeline(name, tmp_path / f"{name}.yaml", settings)
        spec, platform = yaml.safe_load_all(path.read_text())
        default = spec["root"]["inputDefinitions"]["parameters"]["model_registries"]["defaultValue"]
        assert [(s["type"], s["uri"]) for s in default] == [(s.type, s.uri) for s in settings.model_registries]
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        secrets = [e for s in executors[task]["secretAsEnv"] for e in s["keyToEnv"]
                   if s.get("secretName") == "inkbooth-registries"
                   or (s.get("secretNameParameter") or {}).get("runtimeValue", {}).get("constant") == "inkbooth-registries"]
        assert secrets == [{"secretKey": "MLFLOW_TRACKING_TOKEN", "envVar": "MLFLOW_TRACKING_TOKEN"}], executors[task]
        others = [n for n, e in executors.items() if n != task and any(
            "inkbooth-registries" in json.dumps(s) for s in e.get("secretAsEnv", []))]
        assert others == [], "only the register step reads the registries' tokens"
    with pytest.raises(ConfigError, match="name the Secret that holds it in registry_secret"):
        from_dict(cluster.ClusterConfig, {"model_registries": [{"type": "mlflow", "uri": "http://m:5000",
                                                                "token_env": "MLFLOW_TRACKING_TOKEN"}]})


def test_submit_sends_the_cluster_files_registries_with_the_runs():
    settings = cluster.ClusterConfig(model_registries=[{"type": "kubeflow", "uri": "http://k:8080"}])
    run = from_dict(runs.OCRTrainRun, {"base_model": "x/y", "registry": "s3://b/models", "data": "s3://b/lines",
                                       "model_registries": [{"type": "mlflow", "uri": "http://m:5000"}]})
    merged = submit._with_sinks(settings, run)
    args = submit._arguments(run, submit.Endpoint(host="http://kfp.invalid"), merged)
    assert [s["uri"] for s in args["model_registries"]] == ["http://k:8080", "http://m:5000"]
    assert [s["uri"] for s in merged.registry_sinks()] == ["http://k:8080", "http://m:5000"]


@needs_model_registry
def test_doctor_checks_each_registry_of_the_cluster_file(fake_registry):
    dead = free_port()
    settings = cluster.ClusterConfig(model_registries=[
        kubeflow_sink(fake_registry), {"type": "mlflow", "uri": f"http://127.0.0.1:{dead}", "timeout": 3}])
    ok, failed = doctor.registry_findings(settings)
    assert ok.status == "ok" and "Kubeflow Model Registry answers" in ok.message, ok.line()
    assert failed.status == "FAIL" and f"127.0.0.1:{dead}" in failed.message and "MLFLOW_TRACKING_TOKEN" in failed.fix
    assert fake_registry.violations == []

    def unresolvable(sink):
        raise sinks.SinkError("ConnectionError: [Errno -2] Name or service not known")

    inside = cluster.ClusterConfig(model_registries=[{"type": "mlflow", "uri": "http://mlflow.mlflow.svc.cluster.local:5000"},
                                                     {"type": "mlflow", "uri": "http://mlflow.example.com"}])
    warn, fail = doctor.registry_findings(inside, check=unresolvable)
    assert warn.status == "warn" and "cluster-internal name" in warn.message and "port-forward" in warn.fix
    assert fail.status == "FAIL", "a public name that does not resolve is a failure"


@pytest.mark.parametrize("kind, module, extra", [("mlflow", "mlflow", "inkbooth[mlflow]"),
                                                 ("kubeflow", "model_registry", "inkbooth[model-registry]")])
def test_a_sink_without_its_client_says_which_extra_to_install(monkeypatch, kind, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(sinks.SinkError, match=re.escape(f"pip install '{extra}'")):
        sinks.check(sinks.SinkConfig(type=kind, uri="http://127.0.0.1:9"))


# ---- MLflow: a real server (last in the module: it starts while the tests above run) --------------


@needs_mlflow
def test_a_dreambooth_version_is_registered_in_mlflow_once_with_its_properties_and_lineage(trained, mlflow_server,
                                                                                          bucket, tmp_path):
    import diffusers

    url, artifacts_root = mlflow_server
    registry = f"{bucket}/models/registry"
    sink = {"type": "mlflow", "uri": url, "name": "team-mlflow", "experiment": "inkbooth-test"}
    uri, manifest = export(trained, registry, "orange-ball", [sink])
    again, _ = export(trained, registry, "orange-ball", [sink])  # the register step retried
    assert again == uri and uri.endswith("orange-ball/v1")

    client = mlflow_client(url)
    versions = client.search_model_versions("name = 'orange-ball'")
    assert len(versions) == 1, "a retried register step registers nothing twice"
    mv = versions[0]
    assert mv.source == f"{uri}/diffusers", "the loadable diffusers folder of the version"
    expected = as_tags(sinks.describe(uri, manifest).properties())
    assert {k: v for k, v in mv.tags.items() if not k.startswith("mlflow.")} == expected
    assert mv.tags["inkbooth.version"] == "v1" and mv.tags["inkbooth.content_hash"] == manifest.content_hash
    assert mv.tags["inkbooth.format"] == "diffusers" and mv.tags["inkbooth.format_version"] == diffusers.__version__
    for key in ("base_model_hash", "instance_images_hash", "class_images_hash", "trained"):
        assert mv.tags[f"lineage.{key}"] == str(manifest.lineage[key]), key
    assert mv.tags["inputs.trained"] == manifest.inputs["trained"]

    # The version's run: the metrics, and the manifest (every file's hash, config, lineage) as an artifact
    # that the server stored on SeaweedFS.
    experiment = client.get_experiment_by_name("inkbooth-test")
    found = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in found] == [mv.run_id], "one run, the version's, however often registered"
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    numeric = {k: float(v) for k, v in manifest.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numeric and run.data.metrics == pytest.approx(numeric)
    local = client.download_artifacts(mv.run_id, "inkbooth/manifest.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == json.loads(manifest.to_json())
    stored = storage.list_files(artifacts_root)
    assert any(k.endswith(f"{mv.run_id}/artifacts/inkbooth/manifest.json") for k in stored), stored
    assert "inkbooth" in client.get_registered_model("orange-ball").description


@needs_mlflow
def test_a_register_step_killed_half_way_registers_once_in_mlflow_when_retried(mlflow_server, bucket, tmp_path,
                                                                            monkeypatch):
    from mlflow import MlflowClient

    url, _ = mlflow_server
    sink = {"type": "mlflow", "uri": url, "experiment": "inkbooth-retries"}
    client = mlflow_client(url)
    uri, manifest = small_version(bucket, "killed-before-version", tmp_path)
    real = MlflowClient.create_model_version

    def killed(*a, **kw):
        raise ConnectionError("the pod was killed")

    monkeypatch.setattr(MlflowClient, "create_model_version", killed)
    with pytest.raises(sinks.SinkError, match=r"mlflow@127\.0\.0\.1:\d+ .*ConnectionError: the pod was killed"):
        sinks.register_version([sink], uri, manifest)
    monkeypatch.setattr(MlflowClient, "create_model_version", real)
    experiment = client.get_experiment_by_name("inkbooth-retries").experiment_id
    (left,) = client.search_runs([experiment])
    assert not client.search_model_versions("name = 'killed-before-version'")
    sinks.register_version([sink], uri, manifest)
    (mv,) = client.search_model_versions("name = 'killed-before-version'")
    assert mv.run_id == left.info.run_id, "the finished run of the first attempt is reused"
    assert len(client.search_runs([experiment])) == 1

    # Killed before its run was finished: that run is deleted and made again, once.
    uri2, manifest2 = small_version(bucket, "killed-in-run", tmp_path)
    monkeypatch.setattr(MlflowClient, "set_terminated", lambda *a, **kw: (_ for _ in ()).throw(OSError("gone")))
    with pytest.raises(sinks.SinkError, match="OSError: gone"):
        sinks.register_version([sink], uri2, manifest2)
    monkeypatch.undo()
    sinks.register_version([sink], uri2, manifest2)
    sinks.register_version([sink], uri2, manifest2)
    query = "tags.`inkbooth.name` = 'killed-in-run'"
    (run,) = client.search_runs([experiment], filter_string=query)
    assert run.info.status == "FINISHED"
    (mv2,) = client.search_model_versions("name = 'killed-in-run'")
    assert mv2.run_id == run.info.run_id and mv2.tags["inkbooth.version"] == "v1"


@needs_mlflow
def test_mlflow_refuses_to_take_another_content_under_a_registered_version(mlflow_server, bucket, tmp_path):
    url, _ = mlflow_server
    sink = {"type": "mlflow", "uri": url, "experiment": "inkbooth-conflict"}
    uri, manifest = small_version(bucket, "conflicting", tmp_path)
    sinks.register_version([sink], uri, manifest)
    other = dataclasses.replace(manifest, content_hash="0" * 64)
    with pytest.raises(sinks.SinkError, match=r"conflicting version 1 is tagged inkbooth.version=v1 with content "
                                              r"hash [0-9a-f]{12}\.\.\., not 000000000000.*Not overwritten"):
        sinks.register_version([sink], uri, other)
    (mv,) = mlflow_client(url).search_model_versions("name = 'conflicting'")
    assert mv.tags["inkbooth.content_hash"] == manifest.content_hash


@needs_mlflow
def test_doctor_says_mlflow_answers(mlflow_server):
    settings = cluster.ClusterConfig(model_registries=[{"type": "mlflow", "uri": mlflow_server[0]}])
    (finding,) = doctor.registry_findings(settings)
    assert finding.status == "ok" and "MLflow answers" in finding.message, finding.line()
