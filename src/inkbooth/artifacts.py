"""Artifacts, their manifests, and the model registry.

An artifact is a folder of files at a URI (local or ``s3://``) with a ``manifest.json`` that lists
every file with its size and SHA-256, the hashes of the artifact's inputs, the stage config, the
package version and metrics. The manifest is written last: a reader trusts only a folder that has
one, so a half-written artifact is never taken for a finished one.

Two layouts, one reader API:

* **Write-once** (``publish(..., overwrite=False)``, ``seal``; registry versions, class-image sets):
  the files sit at ``<uri>/<path>`` and the manifest beside them; publishing where a manifest
  exists is refused.
* **Republishable** (``publish(..., overwrite=True)``; OCR results, samples, trained models,
  exports, checkpoints): every publish writes a new version beside the old ones, at
  ``<uri>/.inkbooth-versions/<id>/<path>``, and then moves the pointer: ``<uri>/manifest.json`` is replaced
  (one atomic write) by the new version's manifest, whose ``root`` names the version folder. New
  files are never written under an old manifest, so a reader sees one whole version, old or new,
  and a publish killed half way leaves the previous version readable. Old versions are deleted
  by later publishes once they are neither the current nor the previous one and older than
  ``GC_GRACE_SECONDS`` (so a concurrent publish or a slow reader is not cut off).

**Readers go through the manifest**, never through file paths guessed from the URI (after a
republish ``<uri>/results.jsonl`` does not exist; ``<uri>/<root>/results.jsonl`` does)::

    manifest = artifacts.read_manifest(uri)        # the current version (pointer)
    data = artifacts.read_bytes(uri, "results.jsonl")   # one file, verified (also read_text)
    folder = artifacts.fetch(uri)                  # a local folder of the whole version, verified
    target = artifacts.file_uri(uri, "grid.png")   # where a file of the current version lives

``read_bytes`` and ``fetch`` retry when the version they read is replaced and collected while they
read it, so they return one whole version or raise.

The registry keeps ``<root>/<name>/<version>/`` (versions ``v1``, ``v2``, ...) and movable aliases
such as ``latest`` under ``<root>/<name>/aliases/``. A version, once published, is never overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from inkbooth import __version__, storage

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CLAIM = ".claim"
# Not ".versions": SeaweedFS keeps its own object versions in folders of that name and hides them.
VERSIONS = ".inkbooth-versions"
SCHEMA = "inkbooth.manifest/1"
# A superseded version older than this may be deleted (unless it is the previous one).
GC_GRACE_SECONDS = 900.0
_READ_ATTEMPTS = 5


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
        if rel in (MANIFEST, CLAIM) or rel.startswith(VERSIONS + "/"):
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
            overwrite: bool = False, gc_grace: float | None = None) -> Manifest:
    """Publish the files of ``local_dir`` as an artifact at ``uri``; the manifest goes last.

    ``overwrite=False``: write-once, in place; refused where an artifact is already published.
    Locally the folder is assembled under a hidden temporary name and renamed into place; on S3
    each object is written whole and checked, then the manifest with a no-overwrite condition.

    ``overwrite=True``: a new version beside the old ones (``<uri>/.inkbooth-versions/<id>/``), then the
    pointer ``<uri>/manifest.json`` moves to it in one write; old versions are collected (see the
    module docstring; ``gc_grace`` overrides ``GC_GRACE_SECONDS``).
    """
    loc = storage.parse(uri)
    if not loc.is_s3 and Path(local_dir).resolve() == loc.path.resolve():
        raise ValueError(f"{uri}: publishing a folder onto itself; assemble the artifact elsewhere")
    manifest = build_manifest(local_dir, kind=kind, inputs=inputs, config=config, metrics=metrics,
                              lineage=lineage, name=name, version=version)
    if overwrite:
        return _publish_version(Path(local_dir), uri, manifest, GC_GRACE_SECONDS if gc_grace is None else gc_grace)
    if not loc.is_s3:
        _publish_local(Path(local_dir), loc.path, manifest)
        return manifest
    if storage.exists(storage.join(uri, MANIFEST)):
        raise storage.AlreadyExistsError(f"{uri}: an artifact is already published here")
    _upload_files(Path(local_dir), uri, manifest)
    storage.write_text(storage.join(uri, MANIFEST), manifest.to_json(), if_absent=True,
                       content_type="application/json")
    return manifest


def _upload_files(src: Path, uri: str, manifest: Manifest) -> None:
    """Every file of ``manifest`` from ``src`` to its place under ``uri``, each checked once stored."""
    for entry in manifest.files:
        target = manifest.location(uri, entry.path)
        info = storage.upload(src / entry.path, target)
        if info.sha256 != entry.sha256:
            raise storage.ChecksumError(f"{target}: changed while being published")
        stored = storage.stat(target)
        if stored.size != entry.size or (stored.sha256 and stored.sha256 != entry.sha256):
            raise storage.ChecksumError(f"{target}: stored object does not match what was uploaded")


def _copy_tree(src: Path, tmp: Path, manifest: Manifest, dest: Path) -> None:
    """The manifest's files from ``src`` into ``tmp``, each checked against its entry."""
    shutil.copytree(src, tmp, ignore=lambda d, names: [n for n in names if n in (MANIFEST, CLAIM, VERSIONS)
                                                       and Path(d) == src])
    for entry in manifest.files:
        if storage.sha256_file(tmp / entry.path) != entry.sha256:
            raise storage.ChecksumError(f"{dest / entry.path}: copy does not match its source")


def _publish_local(src: Path, dest: Path, manifest: Manifest) -> None:
    if (dest / MANIFEST).exists():
        raise storage.AlreadyExistsError(f"{dest}: an artifact is already published here")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{storage.short_name(dest.name)}.partial-{uuid.uuid4().hex[:8]}"
    try:
        _copy_tree(src, tmp, manifest, dest)
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        if dest.exists():
            # An empty folder made beforehand (a KFP output): it goes, the assembled one takes its place.
            old = dest.parent / f".{storage.short_name(dest.name)}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except OSError as e:
        raise storage._local_error(e, str(dest), "publishing") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _version_id() -> str:
    """A new version's folder name; sorts by creation time (UTC, microseconds), unique."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + uuid.uuid4().hex[:8]


def _version_time(version_id: str) -> float | None:
    try:
        return dt.datetime.strptime(version_id[:21], "%Y%m%dT%H%M%S%f").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def _current(uri: str) -> Manifest | None:
    try:
        return read_manifest(uri)
    except NotPublishedError:
        return None


def _publish_version(src: Path, uri: str, manifest: Manifest, gc_grace: float) -> Manifest:
    previous = _current(uri)
    manifest.root = f"{VERSIONS}/{_version_id()}"
    if previous is not None:
        # Files of a write-once version published in place are remembered until they are collected.
        if not previous.root:
            manifest.in_place = [f.path for f in previous.files]
        elif not _old_enough(previous.root, gc_grace):
            manifest.in_place = list(previous.in_place)
    loc = storage.parse(uri)
    if loc.is_s3:
        _upload_files(src, uri, manifest)
    else:
        dest = loc.path / manifest.root
        tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _copy_tree(src, tmp, manifest, dest)
            os.replace(tmp, dest)
        except OSError as e:
            raise storage._local_error(e, str(dest), "publishing") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    # The pointer moves last, in one atomic write: readers see the old version or this one.
    storage.write_text(storage.join(uri, MANIFEST), manifest.to_json(), content_type="application/json")
    try:
        collect(uri, keep=[manifest.root] + ([previous.root] if previous else []), grace=gc_grace,
                previous=previous)
    except storage.StorageError as e:  # the new version is published; leftovers go next time
        log.warning("%s: old versions not collected: %s", uri, e)
    return manifest


def collect(uri: str, *, keep: list[str], grace: float = GC_GRACE_SECONDS,
            previous: Manifest | None = None) -> list[str]:
    """Delete old versions of the republishable artifact at ``uri``; returns the roots deleted.

    Kept: the roots in ``keep`` (the current and previous versions) and every version younger than
    ``grace`` seconds (a publish still under way, a reader still reading). Files that an earlier
    write-once publish left in place are deleted (those its manifest listed, nothing else) once
    the version that replaced them is itself previous and older than ``grace``.
    """
    now = time.time()
    deleted = []
    versions = storage.join(uri, VERSIONS)
    for vid in sorted({rel.split("/")[0] for rel in storage.list_files(versions)}):
        root = f"{VERSIONS}/{vid}"
        if root in keep or not _old_enough(root, grace):
            continue
        storage.delete_prefix(storage.join(uri, root))
        deleted.append(root)
    loc = storage.parse(versions)
    if not loc.is_s3 and loc.path.is_dir():  # local copies cut short by a kill (never listed as files)
        for partial in loc.path.glob(".*.partial-*"):
            born = _version_time(partial.name[1:])
            if born is not None and now - born >= grace:
                shutil.rmtree(partial, ignore_errors=True)
    if previous is not None and previous.root and previous.in_place and _old_enough(previous.root, grace):
        for rel in previous.in_place:
            storage.delete(storage.join(uri, rel))
        deleted.append("")
    return deleted


def _old_enough(root: str, grace: float) -> bool:
    """Whether the version at ``root`` was made more than ``grace`` seconds ago."""
    born = _version_time(root.rsplit("/", 1)[-1])
    return born is not None and time.time() - born >= grace


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
    """The manifest of the artifact at ``uri`` (its current version); NotPublishedError where there is none."""
    target = storage.join(uri, MANIFEST)
    try:
        text = storage.read_text(target)
    except storage.NotFoundError:
        raise NotPublishedError(f"{uri}: no finished artifact here (no {MANIFEST})") from None
    return Manifest.from_json(text, target)


def is_published(uri: str) -> bool:
    return storage.exists(storage.join(uri, MANIFEST))


def file_uri(uri: str, path: str, manifest: Manifest | None = None) -> str:
    """Where the file ``path`` of the artifact's current version (or of ``manifest``) lives."""
    manifest = manifest or read_manifest(uri)
    manifest.file(path)  # KeyError for a file the artifact does not have
    return manifest.location(uri, path)


def _consistent(uri: str, read: Any, manifest: Manifest | None = None) -> Any:
    """``read(manifest)`` on the current version (``manifest`` when the caller has just read it);
    when that version is replaced and collected while it is being read (a file gone or changed),
    again on the new one. Real damage is raised."""
    manifest = manifest or read_manifest(uri)
    for attempt in range(_READ_ATTEMPTS):
        try:
            return read(manifest)
        except (storage.NotFoundError, storage.ChecksumError, NotPublishedError):
            latest = read_manifest(uri)
            if (latest.root, latest.content_hash) == (manifest.root, manifest.content_hash) \
                    or attempt == _READ_ATTEMPTS - 1:
                raise
            log.info("%s: version %s replaced while being read; reading %s", uri, manifest.root or "(in place)",
                     latest.root)
            manifest = latest
    raise AssertionError("unreachable")


def read_bytes(uri: str, path: str, manifest: Manifest | None = None) -> bytes:
    """The file ``path`` of the artifact at ``uri`` (current version), verified against the manifest.

    A caller reading many files passes the manifest it read once; a replaced version is still
    followed to the new one (see ``_consistent``)."""
    def read(manifest: Manifest) -> bytes:
        try:
            entry = manifest.file(path)
        except KeyError as e:
            raise storage.NotFoundError(f"{uri}: {e.args[0]}") from None
        return storage.read_bytes(manifest.location(uri, path), expected_sha256=entry.sha256)

    return _consistent(uri, read, manifest)


def read_text(uri: str, path: str, manifest: Manifest | None = None) -> str:
    return read_bytes(uri, path, manifest).decode("utf-8")


def fetch(uri: str, local_dir: str | Path | None = None, only: str | None = None) -> Path:
    """A local folder holding one whole version of the artifact at ``uri``, every file verified.

    Local artifacts are verified in place (the folder returned is the version's own). Remote ones
    are cached by content hash, so a second fetch of the same content costs one manifest read.
    ``only`` names one folder of the artifact (e.g. an export variant): just its files are fetched
    and verified.
    """
    return _consistent(uri, lambda manifest: _fetch_version(uri, manifest, local_dir, only))


def _fetch_version(uri: str, manifest: Manifest, local_dir: str | Path | None, only: str | None) -> Path:
    entries = manifest.files
    if only is not None:
        prefix = only.strip("/") + "/"
        entries = [e for e in manifest.files if e.path.startswith(prefix)]
        if not entries:
            raise NotPublishedError(f"{uri}: the artifact has no files under {prefix!r}")
    loc = storage.parse(uri)
    if not loc.is_s3 and local_dir is None:
        root = loc.path / manifest.root if manifest.root else loc.path
        for entry in entries:
            path = root / entry.path
            if not path.is_file():
                raise storage.NotFoundError(f"{uri}: {entry.path} is listed in the manifest but missing")
            if storage.sha256_file(path) != entry.sha256:
                raise storage.ChecksumError(f"{path}: checksum mismatch against {MANIFEST}")
        return root
    dest = Path(local_dir) if local_dir else storage.local_cache_dir() / "artifacts" / manifest.content_hash
    done = dest / MANIFEST
    if done.exists() and Manifest.from_json(done.read_text(), str(done)).content_hash == manifest.content_hash:
        return dest
    # A fetch of one folder has its own completion marker (the whole artifact's is the manifest).
    part = dest / f".fetched-{hashlib.sha256(only.encode()).hexdigest()[:16]}" if only is not None else None
    if part is not None and part.exists() and part.read_text() == manifest.content_hash:
        return dest
    for entry in entries:
        storage.download(manifest.location(uri, entry.path), dest / entry.path, expected_sha256=entry.sha256)
    # Written last, like on the store: a cache folder without it is an interrupted fetch.
    storage.write_text(str(part or done), manifest.content_hash if part is not None
                       else dataclasses.replace(manifest, root="", in_place=[]).to_json())
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

    @staticmethod
    def check_alias(alias: str) -> str:
        """An alias is a name like a model's (no '/', '..', ...) that does not look like a version."""
        if _VERSION.match(alias):
            raise ValueError(f"alias {alias!r} looks like a version")
        if not _NAME.match(alias):
            raise ValueError(f"alias {alias!r} must be 1-63 chars of a-z, 0-9, '.', '_', '-' (e.g. latest, prod)")
        return alias

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.check_alias(alias)
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
        if alias:
            self.check_alias(alias)  # before anything is published
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
