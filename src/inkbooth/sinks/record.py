"""What a sink registers: ``RegisteredVersion`` (a version of inkbooth's registry and its flat
properties), and ``SinkError``. The bottom of the package: the sinks import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any


class SinkError(RuntimeError):
    """A registry sink could not be reached, refused the version, or holds a different one."""


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """A version of inkbooth's registry, as the sinks register it."""

    name: str
    version: str
    uri: str  # the version's folder in inkbooth's registry
    artifact_uri: str  # the loadable model inside it (a diffusers folder, a transformers checkpoint)
    kind: str
    format: str
    format_version: str
    content_hash: str
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    inputs: dict[str, str]
    manifest_json: str
    package_version: str = ""
    code_version: str = ""

    @property
    def description(self) -> str:
        return f"inkbooth {self.kind} {self.name} {self.version} ({self.uri})"

    def properties(self) -> dict[str, str | int | float | bool]:
        """Flat properties: strings, and numbers for metrics (a non-finite number is written as text)."""
        props: dict[str, str | int | float | bool] = {
            "inkbooth.name": self.name, "inkbooth.version": self.version, "inkbooth.kind": self.kind,
            "inkbooth.uri": self.uri, "inkbooth.artifact_uri": self.artifact_uri, "inkbooth.format": self.format,
            "inkbooth.format_version": self.format_version, "inkbooth.content_hash": self.content_hash,
            "inkbooth.package_version": self.package_version,
        }
        if self.code_version:
            props["inkbooth.code_version"] = self.code_version
        for key, value in sorted(self.metrics.items()):
            props[f"metrics.{key}"] = _scalar(value, numbers=True)
        for key, value in sorted(self.lineage.items()):
            props[f"lineage.{key}"] = _scalar(value, numbers=False)
        for key, value in sorted(self.inputs.items()):
            props[f"inputs.{key}"] = str(value)
        return props

    def numeric_metrics(self) -> dict[str, float]:
        """The metrics that are finite numbers (what a registry can chart)."""
        return {k: float(v) for k, v in self.metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _scalar(value: Any, *, numbers: bool) -> str | int | float | bool:
    if isinstance(value, bool):
        return value if numbers else str(value).lower()
    if isinstance(value, (int, float)) and numbers:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
