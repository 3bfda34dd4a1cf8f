"""Artifacts, their manifests, and the model registry.

An artifact is a folder of files at a URI (local or ``s3://``) with a ``manifest.json`` that lists
every file with its size and SHA-256, the hashes of the artifact's inputs, the stage config, the
package version and metrics. The manifest is written last: a reader trusts only a folder that has
one, so a half-written artifact is never taken for a finished one.

The registry keeps ``<root>/<name>/<version>/`` (versions ``v1``, ``v2``, ...) and movable aliases
such as ``latest`` under ``<root>/<name>/aliases/``. A version, once published, is never overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from inkbooth import __version__, storage

MANIFEST = "manifest.json"
CLAIM = ".claim"
SCHEMA = "inkbooth.manifest/1"


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
        if rel in (MANIFEST, CLAIM):
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


def publish(local_dir: str | Path, uri: str, *, kind: str, inputs: dict[str, str] | None = None,
            config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
            lineage: dict[str, Any] | None = None, name: str | None = None, version: str | None = None,
            overwrite: bool = False) -> Manifest:
    """Publish the files of ``local_dir`` as an artifact at ``uri``; the manifest goes last.

    Locally the folder is assembled under a hidden temporary name and renamed into place. On S3
    each object is written whole (a PUT or a completed multipart upload is atomic), checked against
    its SHA-256, and only then is the manifest written, with a no-overwrite condition unless
    ``overwrite`` is set.
    """
    manifest = build_manifest(local_dir, kind=kind, inputs=inputs, config=config, metrics=metrics,
                              lineage=lineage, name=name, version=version)
    loc = storage.parse(uri)
    if not loc.is_s3:
        _publish_local(Path(local_dir), loc.path, manifest, overwrite)
        return manifest
    if not overwrite and storage.exists(storage.join(uri, MANIFEST)):
        raise storage.AlreadyExistsError(f"{uri}: an artifact is already published here")
    for entry in manifest.files:
        target = storage.join(uri, entry.path)
        info = storage.upload(Path(local_dir, entry.path), target)
        if info.sha256 != entry.sha256:
            raise storage.ChecksumError(f"{target}: changed while being published")
        stored = storage.stat(target)
        if stored.size != entry.size or stored.sha256 != entry.sha256:
            raise storage.ChecksumError(f"{target}: stored object does not match what was uploaded")
    storage.write_text(storage.join(uri, MANIFEST), manifest.to_json(), if_absent=not overwrite,
                       content_type="application/json")
    return manifest


def _publish_local(src: Path, dest: Path, manifest: Manifest, overwrite: bool) -> None:
    if dest.exists() and not overwrite and (dest / MANIFEST).exists():
        raise storage.AlreadyExistsError(f"{dest}: an artifact is already published here")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        if src.resolve() == dest.resolve():
            # Publishing in place (a KFP output folder): only the manifest is new.
            storage.write_text(str(dest / MANIFEST), manifest.to_json())
            return
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(MANIFEST, CLAIM))
        for entry in manifest.files:
            if storage.sha256_file(tmp / entry.path) != entry.sha256:
                raise storage.ChecksumError(f"{dest / entry.path}: copy does not match its source")
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except OSError as e:
        raise storage._local_error(e, str(dest), "publishing") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def seal(uri: str, *, kind: str, files: list[str] | None = None, **manifest_fields: Any) -> Manifest:
    """Publish, in place, files already stored under ``uri`` (each written atomically on its own).

    Checksums come from each object's recorded SHA-256 (hashed afresh where none is recorded). The
    manifest is written with a no-overwrite condition: of two sealers, one wins and both succeed.
    """
    names = files if files is not None else [f for f in storage.list_files(uri) if f not in (MANIFEST, CLAIM)]
    entries = []
    for rel in sorted(names):
        info = storage.stat(storage.join(uri, rel))
        digest = info.sha256 or hashlib.sha256(storage.read_bytes(storage.join(uri, rel))).hexdigest()
        entries.append(FileEntry(rel, info.size, digest))
    manifest = new_manifest(entries, kind=kind, **manifest_fields)
    try:
        storage.write_text(storage.join(uri, MANIFEST), manifest.to_json(), if_absent=True)
    except storage.AlreadyExistsError:
        return read_manifest(uri)
    return manifest


def read_manifest(uri: str) -> Manifest:
    """The manifest of the artifact at ``uri``; NotPublishedError where there is none."""
    target = storage.join(uri, MANIFEST)
    try:
        text = storage.read_text(target)
    except storage.NotFoundError:
        raise NotPublishedError(f"{uri}: no finished artifact here (no {MANIFEST})") from None
    return Manifest.from_json(text, target)


def is_published(uri: str) -> bool:
    return storage.exists(storage.join(uri, MANIFEST))


def fetch(uri: str, local_dir: str | Path | None = None, only: str | None = None) -> Path:
    """Make the artifact at ``uri`` available locally, every file verified against the manifest.

    Local artifacts are verified in place. Remote ones are cached by content hash, so a second
    fetch of the same content costs one manifest read. ``only`` names one folder of the artifact
    (e.g. an export variant): just its files are fetched and verified.
    """
    manifest = read_manifest(uri)
    entries = manifest.files
    if only is not None:
        prefix = only.strip("/") + "/"
        entries = [e for e in manifest.files if e.path.startswith(prefix)]
        if not entries:
            raise NotPublishedError(f"{uri}: the artifact has no files under {prefix!r}")
    loc = storage.parse(uri)
    if not loc.is_s3 and local_dir is None:
        for entry in entries:
            path = loc.path / entry.path
            if not path.is_file():
                raise NotPublishedError(f"{uri}: {entry.path} is listed in the manifest but missing")
            if storage.sha256_file(path) != entry.sha256:
                raise storage.ChecksumError(f"{path}: checksum mismatch against {MANIFEST}")
        return loc.path
    dest = Path(local_dir) if local_dir else storage.local_cache_dir() / "artifacts" / manifest.content_hash
    done = dest / MANIFEST
    if done.exists() and Manifest.from_json(done.read_text(), str(done)).content_hash == manifest.content_hash:
        return dest
    # A fetch of one folder has its own completion marker (the whole artifact's is the manifest).
    part = dest / f".fetched-{hashlib.sha256(only.encode()).hexdigest()[:16]}" if only is not None else None
    if part is not None and part.exists() and part.read_text() == manifest.content_hash:
        return dest
    for entry in entries:
        storage.download(storage.join(uri, entry.path), dest / entry.path, expected_sha256=entry.sha256)
    # Written last, like on the store: a cache folder without it is an interrupted fetch.
    storage.write_text(str(part or done), manifest.content_hash if part is not None else manifest.to_json())
    return dest


# ---------------------------------------------------------------------------------------------
# Model registry
# ---------------------------------------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


class Registry:
    """Versioned models under ``<root>/<name>/<version>/`` with movable aliases."""

    def __init__(self, root: str) -> None:
        self.root = root

    @staticmethod
    def check_name(name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"model name {name!r} must be 1-63 chars of a-z, 0-9, '.', '_', '-'")
        return name

    def uri(self, name: str, version: str) -> str:
        return storage.join(self.root, self.check_name(name), version)

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first."""
        found = set()
        for rel in storage.list_files(storage.join(self.root, self.check_name(name))):
            parts = rel.split("/")
            if len(parts) == 2 and parts[1] == MANIFEST and _VERSION.match(parts[0]):
                found.add(parts[0])
        return sorted(found, key=lambda v: int(v[1:]))

    def _highest_number(self, name: str) -> int:
        numbers = [0]
        for rel in storage.list_files(storage.join(self.root, self.check_name(name))):
            m = _VERSION.match(rel.split("/")[0])
            if m:
                numbers.append(int(m.group(1)))
        return max(numbers)

    def resolve(self, name: str, ref: str = "latest") -> str:
        """A version name for ``ref`` (a version such as ``v3``, or an alias such as ``latest``)."""
        if _VERSION.match(ref):
            if not is_published(self.uri(name, ref)):
                raise NotPublishedError(f"model {name} has no version {ref}")
            return ref
        storage.check_part(ref, "alias")
        try:
            alias = json.loads(storage.read_text(storage.join(self.root, self.check_name(name), "aliases", f"{ref}.json")))
        except storage.NotFoundError:
            raise NotPublishedError(f"model {name} has no alias {ref!r}") from None
        return alias["version"]

    def manifest(self, name: str, ref: str = "latest") -> Manifest:
        return read_manifest(self.uri(name, self.resolve(name, ref)))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        if _VERSION.match(alias):
            raise ValueError(f"alias {alias!r} looks like a version")
        storage.check_part(alias, "alias")
        if not is_published(self.uri(name, version)):
            raise NotPublishedError(f"model {name} has no version {version}")
        storage.write_text(storage.join(self.root, name, "aliases", f"{alias}.json"),
                           json.dumps({"version": version}) + "\n")

    def register(self, name: str, local_dir: str | Path, *, kind: str, alias: str | None = "latest",
                 **manifest_fields: Any) -> tuple[str, Manifest]:
        """Publish ``local_dir`` as the next version of ``name`` and move ``alias`` to it.

        Identical content to an existing version is not published twice: that version is returned.
        Two writers racing for one version number cannot both win (the manifest write is
        conditional), the loser takes the next number.
        """
        files = scan_dir(local_dir)
        digest = content_hash(files)
        for v in reversed(self.versions(name)):
            m = read_manifest(self.uri(name, v))
            if m.content_hash == digest:
                if alias:
                    self.set_alias(name, alias, v)
                return v, m
        # A version number is claimed (a no-overwrite write) before anything is uploaded under it,
        # so two writers never upload into the same folder; a claimed number is never reused.
        number = self._highest_number(name) + 1
        for _ in range(50):
            version = f"v{number}"
            try:
                storage.write_text(storage.join(self.uri(name, version), CLAIM), "", if_absent=True)
            except storage.AlreadyExistsError:
                number += 1
                continue
            m = publish(local_dir, self.uri(name, version), kind=kind, name=name, version=version,
                        **manifest_fields)
            if alias:
                self.set_alias(name, alias, version)
            return version, m
        raise storage.StorageError(f"model {name}: could not claim a new version number")
