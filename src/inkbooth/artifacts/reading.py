"""Reading artifacts through their manifest: ``read_manifest``, ``is_published``, ``file_uri``,
``read_bytes``, ``read_text`` and ``fetch``, which follow a version replaced while it is read
(``_consistent``, up to ``_READ_ATTEMPTS`` tries).

Imports ``inkbooth.storage`` and, of this package, only ``manifests``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

from inkbooth import storage
from inkbooth.artifacts.manifests import MANIFEST, Manifest, NotPublishedError

log = logging.getLogger(__name__)

_READ_ATTEMPTS = 5


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
                       else dataclasses.replace(manifest, root="", in_place=[], in_place_since=0.0).to_json())
    return dest
