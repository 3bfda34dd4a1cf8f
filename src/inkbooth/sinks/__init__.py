"""Registry sinks: the model registries teams already run, beside inkbooth's own.

inkbooth's registry (``<registry>/<name>/vN`` on S3, ``inkbooth.artifacts.Registry``) stays the source
of truth: a version is published there first. Then the register stage (DreamBooth's export, OCR
training's register) registers that same version in every sink the run names (``model_registries:``
in the run config and the cluster file, ``SinkConfig``):

* **mlflow** (``inkbooth.sinks.mlflow_sink``, extra ``inkbooth[mlflow]``): a registered model of the
  same name; a model version whose source is the artifact URI and whose tags are the properties
  below (MLflow numbers its versions itself: ours is the tag ``inkbooth.version``), linked to a run
  in the sink's experiment that holds the metrics and the version's ``manifest.json`` as an artifact.
* **kubeflow** (``inkbooth.sinks.kubeflow_sink``, extra ``inkbooth[model-registry]``): through the
  ``model-registry`` client, a RegisteredModel, a ModelVersion named like ours (``v3``) with the
  properties as custom properties, and a ModelArtifact with the URI, format and format version.

The properties (``RegisteredVersion.properties``): ``inkbooth.*`` (name, version, kind, version URI,
artifact URI, format, format version, content hash, package and code version), ``metrics.*`` (numbers),
``lineage.*`` and ``inputs.*`` (the hashes and URIs the version was made from).

A retry registers nothing twice: each sink first looks the version up (by name and version) and
finds it there with the same content hash; a version half registered by a killed attempt is
completed. The same name and version with another content hash is an error (two inkbooth
registries writing into one sink), never overwritten. A sink that fails fails the stage with one
error naming every sink that failed and why, after the others were tried.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from inkbooth.sinks.record import RegisteredVersion, SinkError
from inkbooth.sinks.settings import SinkConfig, combine, parse

log = logging.getLogger(__name__)

__all__ = ["RegisteredVersion", "SinkConfig", "SinkError", "check", "combine", "describe", "parse", "reachable",
           "register_version"]

# What a registered kind is in the formats registries know: (format, file with the format's version,
# the key holding it, the loadable model's folder inside the version ("" for the version itself)).
FORMATS = {
    "dreambooth-export": ("diffusers", "diffusers/model_index.json", "_diffusers_version", "diffusers"),
    "trocr-model": ("transformers", "config.json", "transformers_version", ""),
}


class Sink(Protocol):
    def check(self) -> str:
        """What the registry answered (a short phrase); raises when it does not answer."""

    def register(self, version: RegisteredVersion) -> str:
        """Register ``version`` unless it is already there; where it is, in the registry's own terms."""


def describe(uri: str, manifest: Any) -> RegisteredVersion:
    """The registered version at ``uri`` (its manifest given) as sinks see it; its format is read from its files."""
    from inkbooth import artifacts

    fmt, version_file, version_key, folder = FORMATS.get(manifest.kind, (manifest.kind, "", "", ""))
    format_version = ""
    if version_file:
        try:
            format_version = str(json.loads(artifacts.read_text(uri, version_file)).get(version_key) or "")
        except (KeyError, ValueError, artifacts.NotPublishedError) as e:  # a version without the file: say so
            log.warning("%s: no %s to read the %s version from (%s)", uri, version_file, fmt, e)
    return RegisteredVersion(
        name=manifest.name, version=manifest.version, uri=uri,
        artifact_uri=manifest.location(uri, folder) if folder else uri, kind=manifest.kind, format=fmt,
        format_version=format_version, content_hash=manifest.content_hash, metrics=dict(manifest.metrics),
        lineage=dict(manifest.lineage), inputs=dict(manifest.inputs), manifest_json=manifest.to_json(),
        package_version=manifest.inkbooth_version or "", code_version=manifest.code_version or "")


@contextlib.contextmanager
def opened(config: SinkConfig) -> Iterator[Sink]:
    """A client for the sink ``config`` names (its package imported only now); closed afterwards."""
    if config.type == "mlflow":
        from inkbooth.sinks.mlflow_sink import MLflowSink as cls
    else:
        from inkbooth.sinks.kubeflow_sink import KubeflowSink as cls
    sink = cls(config)
    try:
        yield sink
    finally:
        close = getattr(sink, "close", None)
        if close is not None:
            close()


def _why(exc: BaseException) -> str:
    from inkbooth import storage

    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, SinkError):
        text = f"{type(exc).__name__}: {text}"
    return storage.redact(text)[:600]


def reachable(sinks: list[Any] | None, registry: str) -> list[SinkConfig]:
    """The sinks' settings, checked before a stage does its work: sinks need an s3:// registry, since a
    registry elsewhere cannot read a version from this machine's disk."""
    configs = parse(sinks)
    from inkbooth import storage

    if configs and not storage.is_s3(registry):
        raise SinkError(f"registry {registry} is a local path: {', '.join(c.label() for c in configs)} could not "
                        "read a version from there; model_registries need an s3:// registry")
    return configs


def register_version(sinks: list[Any] | None, uri: str, manifest: Any) -> dict[str, str]:
    """Register the version published at ``uri`` in every sink; returns {sink: where it is there}.

    Every sink is tried; if any failed, one ``SinkError`` names each that failed and why (the version
    stays registered in inkbooth's registry and in the sinks that took it; a rerun completes the rest).
    """
    configs = reachable(sinks, uri)
    if not configs:
        return {}
    record = describe(uri, manifest)
    done: dict[str, str] = {}
    failed: list[str] = []
    for config in configs:
        try:
            with opened(config) as sink:
                done[config.label()] = sink.register(record)
        except Exception as e:  # noqa: BLE001 - every sink is tried, then all failures are reported together
            failed.append(f"{config.label()} ({config.uri}): {_why(e)}")
        else:
            log.info("%s %s registered in %s as %s", record.name, record.version, config.label(),
                     done[config.label()])
    if failed:
        raise SinkError(f"{record.name} {record.version} is registered at {uri} but registering it in "
                        f"{len(failed)} of {len(configs)} model registries failed: " + "; ".join(failed)
                        + ". A rerun of the register step registers it where it is missing, nowhere twice")
    return done


def check(config: SinkConfig) -> str:
    """Whether the sink answers (for ``inkbooth doctor``): what it said; raises ``SinkError`` if it does not."""
    try:
        with opened(config) as sink:
            return sink.check()
    except SinkError:
        raise
    except Exception as e:  # noqa: BLE001 - the doctor shows any failure as a finding
        raise SinkError(_why(e)) from e
