"""``SinkConfig``: one model registry a registered version is also registered in (the run config's and
the cluster file's ``model_registries:``), and how the two lists combine.

Light on purpose: imports only ``inkbooth.config``, so run configs and the cluster file can name it.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from typing import Any, Literal

from inkbooth.config import option

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclasses.dataclass
class SinkConfig:
    """A model registry beside inkbooth's own: every registered version goes there too (same name and version)."""

    type: Literal["mlflow", "kubeflow"] = option(
        help="mlflow: an MLflow tracking server's Model Registry; kubeflow: the Kubeflow Model Registry (REST API)")
    uri: str = option(help="where it answers: mlflow, the tracking URI (http://mlflow.mlflow.svc.cluster.local:5000); "
                           "kubeflow, the REST service (http://model-registry-service.kubeflow.svc.cluster.local:8080)")
    name: str = option("", "a name for messages and doctor ('' for <type>@<host>)")
    experiment: str = option("inkbooth", "mlflow: the experiment that holds one run per version (its metrics and "
                                         "manifest.json, the version's lineage)")
    author: str = option("inkbooth", "kubeflow: the author and owner recorded on models and versions")
    storage_key: str = option("", "kubeflow: the data connection (Secret) a deployment reads the artifact with, "
                                  "recorded on the model artifact ('' for none)")
    custom_ca: str = option("", "kubeflow over https: a PEM file of the CA that signed the registry's certificate")
    token_env: str = option("", "environment variable holding a bearer token (the token itself never goes in a "
                                "config); '' for the default: mlflow, MLflow's own MLFLOW_TRACKING_TOKEN or "
                                "_USERNAME/_PASSWORD; kubeflow, the pod's service account token")
    timeout: float = option(30.0, "seconds one request may take", min=1, max=600)

    def validate(self) -> None:
        url = urllib.parse.urlsplit(self.uri)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"uri: {self.uri!r} is not an http(s):// URL")
        if url.username or url.password:
            # A password in a URL would be a pipeline parameter, shown in the KFP UI and the run's logs.
            raise ValueError("uri: credentials in the URL; give the token through token_env (an environment "
                             "variable, on a cluster from the Secret registry_secret names)")
        if url.query or url.fragment:
            raise ValueError(f"uri: {self.uri!r} has a query or fragment; give scheme://host[:port][/path]")
        if self.type == "kubeflow" and url.path.strip("/"):
            raise ValueError(f"uri: {self.uri!r}: the Model Registry client takes scheme://host[:port] only "
                             "(its API lives under /api/model_registry/)")
        if self.name and not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} must be 1-63 chars of a-z, 0-9, '.', '_', '-'")
        if self.token_env and not _ENV.match(self.token_env):
            raise ValueError(f"token_env: {self.token_env!r} is not an environment variable name")
        if not self.experiment:
            raise ValueError("experiment: must not be empty")

    def label(self) -> str:
        """What messages call this sink: its name, or ``<type>@<host[:port]>``."""
        return self.name or f"{self.type}@{urllib.parse.urlsplit(self.uri).netloc}"

    def key(self) -> tuple[str, str]:
        """Two entries with the same key are the same registry."""
        return self.type, self.uri.rstrip("/")


def parse(entries: list[Any] | None, *, source: str = "model_registries") -> list[SinkConfig]:
    """Sink settings from a list of mappings (or ``SinkConfig``), each checked; the same registry twice is refused."""
    from inkbooth.config import ConfigError, from_dict

    sinks: list[SinkConfig] = []
    for i, entry in enumerate(entries or []):
        sink = entry if isinstance(entry, SinkConfig) else from_dict(SinkConfig, entry, source=f"{source}[{i}]")
        if isinstance(entry, SinkConfig):
            sink.validate()
        if any(s.key() == sink.key() for s in sinks):
            raise ConfigError(f"{source}[{i}]: {sink.label()} is listed twice")
        sinks.append(sink)
    return sinks


def combine(cluster: list[Any], run: list[Any]) -> list[SinkConfig]:
    """The cluster file's sinks, then the run's; a registry both name is kept once, as the run gives it."""
    run_sinks = parse(run, source="run: model_registries")
    taken = {s.key() for s in run_sinks}
    return [s for s in parse(cluster, source="cluster: model_registries") if s.key() not in taken] + run_sinks
