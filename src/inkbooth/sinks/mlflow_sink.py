"""The MLflow sink: a version of inkbooth's registry as an MLflow registered model's version.

Through the ``mlflow`` client (``pip install 'inkbooth[mlflow]'``: mlflow-skinny). MLflow numbers a
model's versions itself (1, 2, ...) and reserves aliases like ``v3``, so our version is the tag
``inkbooth.version``, and a version is looked up by it before anything is created:

1. a model version of ``name`` tagged with our version: there already (same content hash: done;
   another: an error, never overwritten);
2. else the version's run in the sink's experiment (tags ``inkbooth.name``/``inkbooth.version``), made
   once: the metrics and ``inkbooth/manifest.json`` (config, lineage, every file's hash) as an
   artifact, which the tracking server stores in its artifact store; a run a killed attempt left
   unfinished is deleted and made again;
3. then the registered model (created if missing) and the model version: source = the artifact URI,
   run = that run, every property a tag, in one request.

Credentials: MLflow's own environment (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME`` and
``_PASSWORD``), or the variable ``token_env`` names; requests time out after ``timeout`` seconds and
are retried 3 times (MLflow's default retries for minutes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from inkbooth import runtime
from inkbooth.sinks.record import RegisteredVersion, SinkError
from inkbooth.sinks.settings import SinkConfig

MANIFEST_PATH = "inkbooth/manifest.json"
RETRIES = 3


def _client_class() -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise SinkError("the mlflow client is not installed: pip install 'inkbooth[mlflow]'") from None
    return MlflowClient


class MLflowSink:
    """One MLflow tracking server (its Model Registry and one experiment)."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.client = _client_class()(tracking_uri=config.uri, registry_uri=config.uri)

    @contextlib.contextmanager
    def _env(self, retries: int = RETRIES) -> Iterator[None]:
        """MLflow reads its request settings and credentials from the environment at each request."""
        values = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(self.config.timeout)),
                  "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  # The client writes each run's URL to stdout; a step's output is not its to fill.
                  "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
        if self.config.token_env:
            token = os.environ.get(self.config.token_env)
            if not token:
                raise SinkError(f"token_env: the environment variable {self.config.token_env} is not set")
            values["MLFLOW_TRACKING_TOKEN"] = token
        with runtime.environment(values):
            yield

    def check(self) -> str:
        with self._env(retries=0):
            found = self.client.search_registered_models(max_results=100)
        return f"MLflow answers ({len(found)}{'+' if len(found) == 100 else ''} registered models visible)"

    def find(self, record: RegisteredVersion) -> list[Any]:
        """The model versions of ``record.name`` tagged with ``record.version``."""
        query = f"name = '{record.name}' and tags.`inkbooth.version` = '{record.version}'"
        return list(self.client.search_model_versions(filter_string=query))

    def register(self, record: RegisteredVersion) -> str:
        with self._env():
            found = self.find(record)
            if found:
                return self._same(found, record)
            self._registered_model(record)
            run_id = self._run(record)
            tags = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in record.properties().items()}
            mv = self.client.create_model_version(record.name, record.artifact_uri, run_id=run_id, tags=tags,
                                                  description=record.description, await_creation_for=0)
        return f"models:/{record.name}/{mv.version}"

    def _same(self, found: list[Any], record: RegisteredVersion) -> str:
        for mv in found:
            theirs = (mv.tags or {}).get("inkbooth.content_hash")
            if theirs != record.content_hash:
                raise SinkError(f"model {record.name} version {mv.version} is tagged inkbooth.version="
                                f"{record.version} with content hash {str(theirs)[:12]}..., not "
                                f"{record.content_hash[:12]}...: another registry's {record.version}? Not overwritten")
        first = min(found, key=lambda mv: int(mv.version))
        return f"models:/{record.name}/{first.version}"

    def _registered_model(self, record: RegisteredVersion) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(
                record.name, tags={"inkbooth.name": record.name},
                description=f"inkbooth model {record.name}: each version mirrors one of inkbooth's registry "
                            "(tag inkbooth.version, URI inkbooth.uri)")
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(self.config.experiment)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(self.config.experiment)
        except MlflowException as e:  # made meanwhile by another writer
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(self.config.experiment).experiment_id

    def _run(self, record: RegisteredVersion) -> str:
        """The version's finished run, made now unless an earlier attempt finished it."""
        from mlflow.entities import Metric

        experiment_id = self._experiment_id()
        query = f"tags.`inkbooth.name` = '{record.name}' and tags.`inkbooth.version` = '{record.version}'"
        for run in self.client.search_runs([experiment_id], filter_string=query):
            if run.info.status == "FINISHED" and run.data.tags.get("inkbooth.content_hash") == record.content_hash:
                return run.info.run_id
            self.client.delete_run(run.info.run_id)  # a killed attempt's, or another content's: not ours
        run = self.client.create_run(experiment_id, run_name=f"{record.name}-{record.version}",
                                     tags={"inkbooth.name": record.name, "inkbooth.version": record.version,
                                           "inkbooth.content_hash": record.content_hash,
                                           "inkbooth.uri": record.uri})
        run_id = run.info.run_id
        metrics = [Metric(k, v, run.info.start_time, 0) for k, v in sorted(record.numeric_metrics().items())]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        self.client.log_text(run_id, record.manifest_json, MANIFEST_PATH)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id
