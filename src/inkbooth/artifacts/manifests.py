"""Manifests: what an artifact is (``FileEntry``, ``Manifest``, ``content_hash``, ``scan_dir``,
``build_manifest``, ``new_manifest``), the names of its special files (``MANIFEST``, ``CLAIM``,
``VERSIONS``, and the markers in a version's folder: ``PUBLISHING``, ``SUPERSEDED``), the manifest
``SCHEMA`` and ``NotPublishedError``.

The bottom of the package: imports nothing of ``inkbooth.artifacts``, only ``inkbooth.storage``
(and the package version).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from inkbooth import __version__, storage

MANIFEST = "manifest.json"
CLAIM = ".claim"
# Not ".versions": SeaweedFS keeps its own object versions in folders of that name and hides them.
VERSIONS = ".inkbooth-versions"
SCHEMA = "inkbooth.manifest/1"
# Markers in a version's folder (never files of the artifact): its publish is under way (written
# before its first file, removed once the pointer names it), and when the pointer moved away from it.
PUBLISHING = ".inkbooth-publishing"
SUPERSEDED = ".inkbooth-superseded"
MARKERS = (PUBLISHING, SUPERSEDED)


class NotPublishedError(storage.StorageError):
    """The URI holds no finished artifact (no manifest): absent, or a publish that did not finish."""


@dataclasses.dataclass
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclasses.dataclass
class Manifest:
    """What an artifact is, where it came from and how good it is."""

    kind: str
    content_hash: str
    files: list[FileEntry]
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    lineage: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str | None = None
    version: str | None = None
    # Where the files are, relative to the artifact's URI: "" (in place) or ".inkbooth-versions/<id>".
    root: str = ""
    # Files an earlier in-place version left at the artifact's URI, to be collected.
    in_place: list[str] = dataclasses.field(default_factory=list)
    # When the pointer moved away from that in-place version (seconds since the epoch; 0: unknown).
    in_place_since: float = 0.0
    inkbooth_version: str = __version__
    code_version: str | None = None
    created_at: str = ""
    schema: str = SCHEMA

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise NotPublishedError(f"{where}: manifest is not valid JSON ({e})") from None
        if data.get("schema") != SCHEMA:
            raise NotPublishedError(f"{where}: unknown manifest schema {data.get('schema')!r}")
        data["files"] = [FileEntry(**f) for f in data.get("files", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def location(self, uri: str, path: str = "") -> str:
        """The URI of ``path`` (a file of this version) under the artifact at ``uri``."""
        parts = [p for p in (self.root, path) if p]
        return storage.join(uri, *parts) if parts else uri

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(f"{path} is not part of this {self.kind} artifact")


def content_hash(files: list[FileEntry]) -> str:
    """The artifact's identity: sha256 over its sorted (path, sha256) pairs."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()


def scan_dir(local_dir: str | Path) -> list[FileEntry]:
    """File entries for every file under ``local_dir`` (the manifest itself excluded)."""
    root = Path(local_dir)
    entries = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if rel in (MANIFEST, CLAIM, *MARKERS) or rel.startswith(VERSIONS + "/"):
            continue
        storage.check_part(rel, "artifact file name")
        entries.append(FileEntry(rel, p.stat().st_size, storage.sha256_file(p)))
    return entries


@functools.cache
def _code_version() -> str | None:
    """The git commit of the source tree, when running from a checkout (else None); asked once."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_manifest(local_dir: str | Path, *, kind: str, inputs: dict[str, str] | None = None,
                   config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                   lineage: dict[str, Any] | None = None, name: str | None = None,
                   version: str | None = None) -> Manifest:
    return new_manifest(scan_dir(local_dir), kind=kind, inputs=dict(inputs or {}), config=dict(config or {}),
                        metrics=dict(metrics or {}), lineage=dict(lineage or {}), name=name, version=version)


def new_manifest(files: list[FileEntry], *, kind: str, **fields: Any) -> Manifest:
    """A manifest for these files, stamped with the code version and the time."""
    return Manifest(kind=kind, content_hash=content_hash(files), files=files, code_version=_code_version(),
                    created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **fields)
