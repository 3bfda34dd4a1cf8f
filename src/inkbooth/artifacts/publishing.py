"""Publishing artifacts: write-once in place (``publish(..., overwrite=False)``, ``seal``) or as
a new version beside the old ones (``publish(..., overwrite=True)``), a local folder replaced
(``publish_replacing``), and collecting old versions
(``collect``). The layouts are described in the package docstring (``inkbooth.artifacts``).

A versioned publish writes a ``PUBLISHING`` marker into its version's folder before any file (who
publishes, since when), then the files, then moves the pointer; it checks that its version is
still whole (raising if it is not, never returning with a pointer to missing files), records in
the version it replaced when that stopped being current (``SUPERSEDED``), and removes its marker.
``collect`` keeps the current version, the ones it is told to keep, and every version whose publish
is under way (a ``PUBLISHING`` marker younger than ``PUBLISH_STALE_SECONDS``, far above any publish;
a killed publish leaves its marker, which goes stale). Any other version goes once it has been
superseded for ``GC_GRACE_SECONDS``: old by when it was last current, never by when its publish
started. A version with no record of that (its mover's record lost to a race, a publish that
failed before its pointer) is stamped the first time a collector sees it, and goes a grace later.
``in_progress`` lists the publishes under way at a URI.

Imports ``inkbooth.storage`` and, of this package, ``manifests`` and ``reading``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from inkbooth import storage
from inkbooth.artifacts.manifests import (
    CLAIM,
    MANIFEST,
    MARKERS,
    PUBLISHING,
    SUPERSEDED,
    VERSIONS,
    FileEntry,
    Manifest,
    NotPublishedError,
    build_manifest,
    new_manifest,
)
from inkbooth.artifacts.reading import read_manifest

log = logging.getLogger(__name__)

# A version superseded longer ago than this may be deleted (unless it is the previous one).
GC_GRACE_SECONDS = 900.0
# A PUBLISHING marker older than this is of a publish that died (a publish never takes this long).
PUBLISH_STALE_SECONDS = 24 * 3600.0


def publish(local_dir: str | Path, uri: str, *, kind: str, inputs: dict[str, str] | None = None,
            config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
            lineage: dict[str, Any] | None = None, name: str | None = None, version: str | None = None,
            overwrite: bool = False, gc_grace: float | None = None, owner: str = "") -> Manifest:
    """Publish the files of ``local_dir`` as an artifact at ``uri``; the manifest goes last.

    ``overwrite=False``: write-once, in place; refused where an artifact is already published.
    Locally the folder is assembled under a hidden temporary name and renamed into place; on S3
    each object is written whole and checked, then the manifest with a no-overwrite condition.

    ``overwrite=True``: a new version beside the old ones (``<uri>/.inkbooth-versions/<id>/``), then the
    pointer ``<uri>/manifest.json`` moves to it in one write; old versions are collected (see the
    module docstring; ``gc_grace`` overrides ``GC_GRACE_SECONDS``). ``owner`` (e.g. the pipeline run
    that publishes) is recorded in the version's ``PUBLISHING`` marker while the publish is under way.
    """
    loc = storage.parse(uri)
    if not loc.is_s3 and Path(local_dir).resolve() == loc.path.resolve():
        raise ValueError(f"{uri}: publishing a folder onto itself; assemble the artifact elsewhere")
    manifest = build_manifest(local_dir, kind=kind, inputs=inputs, config=config, metrics=metrics,
                              lineage=lineage, name=name, version=version)
    if overwrite:
        return _publish_version(Path(local_dir), uri, manifest, GC_GRACE_SECONDS if gc_grace is None else gc_grace,
                                owner)
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
    shutil.copytree(src, tmp, dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names if n in (MANIFEST, CLAIM, VERSIONS, *MARKERS)
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


def _publish_version(src: Path, uri: str, manifest: Manifest, gc_grace: float, owner: str) -> Manifest:
    manifest.root = f"{VERSIONS}/{_version_id()}"
    marker = storage.join(uri, manifest.root, PUBLISHING)
    _write_version(src, uri, manifest, _stamp(owner=owner))
    try:
        # What the pointer moves away from, read just before it moves (a slow publish began long ago).
        replaced = _current(uri)
        _carry_in_place(manifest, replaced, gc_grace)
        # The pointer moves last, in one atomic write: readers see the old version or this one.
        storage.write_text(storage.join(uri, MANIFEST), manifest.to_json(), content_type="application/json")
        _check_whole(uri, manifest)
    except Exception:
        _remove(marker)  # no longer under way; a kill leaves the marker, stale in PUBLISH_STALE_SECONDS
        raise
    if replaced is not None and replaced.root and replaced.root != manifest.root:
        try:
            storage.write_text(storage.join(uri, replaced.root, SUPERSEDED), _stamp(by=manifest.root))
        except storage.StorageError as e:  # a collector stamps it when it first sees it
            log.warning("%s: could not record that %s was superseded: %s", uri, replaced.root, e)
    _remove(marker)
    try:
        collect(uri, keep=[manifest.root] + ([replaced.root] if replaced else []), grace=gc_grace,
                previous=replaced)
    except storage.StorageError as e:  # the new version is published; leftovers go next time
        log.warning("%s: old versions not collected: %s", uri, e)
    return manifest


def _write_version(src: Path, uri: str, manifest: Manifest, marker: str) -> None:
    """The version's files at ``<uri>/<root>``, its PUBLISHING marker first."""
    loc = storage.parse(uri)
    if loc.is_s3:
        storage.write_text(storage.join(uri, manifest.root, PUBLISHING), marker)
        try:
            _upload_files(src, uri, manifest)
        except Exception:
            _remove(storage.join(uri, manifest.root, PUBLISHING))
            raise
        return
    dest = loc.path / manifest.root
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        (tmp / PUBLISHING).write_text(marker, encoding="utf-8")
        _copy_tree(src, tmp, manifest, dest)
        os.replace(tmp, dest)
    except OSError as e:
        raise storage._local_error(e, str(dest), "publishing") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _carry_in_place(manifest: Manifest, replaced: Manifest | None, grace: float) -> None:
    """Files of a write-once version published in place are remembered until they are collected."""
    if replaced is None:
        return
    if not replaced.root:
        manifest.in_place, manifest.in_place_since = [f.path for f in replaced.files], time.time()
    elif replaced.in_place and not _in_place_old(replaced, grace):
        manifest.in_place = list(replaced.in_place)
        manifest.in_place_since = _in_place_since(replaced) or time.time()


def _check_whole(uri: str, manifest: Manifest) -> None:
    """Raise if a file of the version the pointer now names is gone (deleted while it was published)."""
    present = set(storage.list_files(storage.join(uri, manifest.root)))
    missing = [f.path for f in manifest.files if f.path not in present]
    if missing:
        raise storage.StorageError(
            f"{uri}: version {manifest.root} was collected while it was being published ({len(missing)} of its "
            f"{len(manifest.files)} files gone, e.g. {missing[0]}); the pointer names it: publish again")


def _stamp(**fields: Any) -> str:
    return json.dumps({"at": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields}) + "\n"


def _read_marker(target: str) -> dict[str, Any] | None:
    """A marker's fields; None where it does not exist, {} where it cannot be read."""
    try:
        data = json.loads(storage.read_text(target))
    except storage.NotFoundError:
        return None
    except (ValueError, storage.ChecksumError):
        return {}
    return data if isinstance(data, dict) else {}


def _at(data: dict[str, Any] | None) -> float | None:
    at = (data or {}).get("at")
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None


def _remove(target: str) -> None:
    try:
        storage.delete(target)
    except storage.StorageError as e:
        log.warning("%s: not removed: %s", target, e)


def in_progress(uri: str) -> list[dict[str, Any]]:
    """The publishes of new versions of ``uri`` that began and did not finish, from their markers:
    each ``{"root", "owner", "at", "stale"}`` (``stale``: older than ``PUBLISH_STALE_SECONDS``, a
    publish that died). Includes local copies not yet moved into place."""
    now, found = time.time(), []
    versions = storage.join(uri, VERSIONS)
    roots = {rel.split("/")[0] for rel in storage.list_files(versions) if rel.endswith("/" + PUBLISHING)}
    loc = storage.parse(versions)
    if not loc.is_s3 and loc.path.is_dir():
        roots |= {p.name for p in loc.path.glob(".*.partial-*") if (p / PUBLISHING).is_file()}
    for vid in sorted(roots):
        data = _read_marker(storage.join(versions, vid, PUBLISHING))
        if data is None:  # finished since the listing
            continue
        at = _at(data) or _version_time(vid.lstrip(".")) or 0.0
        found.append({"root": f"{VERSIONS}/{vid}", "owner": str(data.get("owner") or ""), "at": at,
                      "stale": now - at >= PUBLISH_STALE_SECONDS})
    return found


def collect(uri: str, *, keep: list[str], grace: float | None = None,
            previous: Manifest | None = None) -> list[str]:
    """Delete old versions of the republishable artifact at ``uri``; returns the roots deleted.

    Kept: the current version (read after the listing), the roots in ``keep`` (the caller's own and
    the previous one), every version whose publish is under way, and every version superseded less
    than ``grace`` seconds ago (default ``GC_GRACE_SECONDS``: a reader still reading). Files that
    an earlier write-once publish left in place are deleted (those its manifest listed, nothing
    else) once the pointer moved away from them longer than ``grace`` ago.
    """
    grace = GC_GRACE_SECONDS if grace is None else grace
    now = time.time()
    versions = storage.join(uri, VERSIONS)
    listed: dict[str, set[str]] = {}
    for rel in storage.list_files(versions):
        vid, _, rest = rel.partition("/")
        if rest:
            listed.setdefault(vid, set()).add(rest)
    current = _current(uri)  # read after the listing: a version made current meanwhile is kept too
    kept = set(keep) | ({current.root} if current is not None else set())
    deleted = []
    for vid, names in sorted(listed.items()):
        root = f"{VERSIONS}/{vid}"
        if root in kept or _being_published(uri, root, names, now):
            continue
        if now - _superseded_at(uri, root, names, now) < grace:
            continue
        storage.delete_prefix(storage.join(uri, root))
        deleted.append(root)
    loc = storage.parse(versions)
    if not loc.is_s3 and loc.path.is_dir():  # local copies cut short by a kill (never listed as files)
        for partial in loc.path.glob(".*.partial-*"):
            started = _at(_read_marker(str(partial / PUBLISHING))) or _version_time(partial.name[1:])
            if started is not None and now - started >= PUBLISH_STALE_SECONDS:
                shutil.rmtree(partial, ignore_errors=True)
    if previous is not None and previous.root and previous.in_place and _in_place_old(previous, grace):
        for rel in previous.in_place:
            storage.delete(storage.join(uri, rel))
        deleted.append("")
    return deleted


def _being_published(uri: str, root: str, names: set[str], now: float) -> bool:
    if PUBLISHING not in names:
        return False
    data = _read_marker(storage.join(uri, root, PUBLISHING))
    if data is None:  # removed since the listing: that publish has just finished; decided next time
        return True
    started = _at(data) or _version_time(root.rsplit("/", 1)[-1]) or 0.0
    return now - started < PUBLISH_STALE_SECONDS


def _superseded_at(uri: str, root: str, names: set[str], now: float) -> float:
    """When the pointer moved away from the version at ``root``; recorded now where nobody did."""
    target = storage.join(uri, root, SUPERSEDED)
    if SUPERSEDED in names:
        at = _at(_read_marker(target))
        if at is not None:
            return at
    try:  # never recorded (the record lost to a race, or never current): superseded from now on
        storage.write_text(target, _stamp(by="collect"), if_absent=SUPERSEDED not in names)
    except storage.AlreadyExistsError:
        pass
    return now


def _in_place_since(m: Manifest) -> float | None:
    """When the pointer moved away from the in-place files ``m`` remembers (older manifests: ``m``'s start)."""
    return m.in_place_since or _version_time(m.root.rsplit("/", 1)[-1])


def _in_place_old(m: Manifest, grace: float) -> bool:
    since = _in_place_since(m)
    return since is not None and time.time() - since >= grace


def publish_replacing(local_dir: str | Path, dest: Path, **publish_args: Any) -> Manifest:
    """Publish ``local_dir`` at the local folder ``dest`` in place of what is there (package data,
    found by its file names, not a version under ``.inkbooth-versions/``): the old folder steps aside
    to ``.<name>.old`` and comes back if the publish fails. ``publish_args`` go to ``publish``."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    try:
        manifest = publish(local_dir, str(dest), **publish_args)
    except BaseException:
        if not dest.exists() and old.exists():
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return manifest


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
