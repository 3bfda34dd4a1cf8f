"""Publishing artifacts: write-once in place (``publish(..., overwrite=False)``, ``seal``) or as
a new version beside the old ones (``publish(..., overwrite=True)``), and collecting old versions
(``collect``, after ``GC_GRACE_SECONDS``). The layouts are described in the package docstring
(``inkbooth.artifacts``).

Imports ``inkbooth.storage`` and, of this package, ``manifests`` and ``reading``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from inkbooth import storage
from inkbooth.artifacts.manifests import (
    CLAIM,
    MANIFEST,
    VERSIONS,
    FileEntry,
    Manifest,
    NotPublishedError,
    build_manifest,
    new_manifest,
)
from inkbooth.artifacts.reading import read_manifest

log = logging.getLogger(__name__)

# A superseded version older than this may be deleted (unless it is the previous one).
GC_GRACE_SECONDS = 900.0


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
