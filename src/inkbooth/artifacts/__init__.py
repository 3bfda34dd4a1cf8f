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
  by later publishes once they are neither the current nor the previous one and were superseded
  more than ``GC_GRACE_SECONDS`` ago (so a slow reader is not cut off); a version whose publish is
  under way (its ``PUBLISHING`` marker, see ``in_progress``) is never deleted, however long the
  publish takes, and a publish whose version was deleted anyway raises instead of returning.

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

from inkbooth.artifacts.manifests import (
    CLAIM,
    MANIFEST,
    PUBLISHING,
    SCHEMA,
    SUPERSEDED,
    VERSIONS,
    FileEntry,
    Manifest,
    NotPublishedError,
    build_manifest,
    content_hash,
    new_manifest,
    scan_dir,
)
from inkbooth.artifacts.publishing import (
    GC_GRACE_SECONDS,
    PUBLISH_STALE_SECONDS,
    collect,
    in_progress,
    publish,
    publish_replacing,
    seal,
)
from inkbooth.artifacts.reading import fetch, file_uri, is_published, read_bytes, read_manifest, read_text
from inkbooth.artifacts.registry import Registry

__all__ = [
    "CLAIM",
    "GC_GRACE_SECONDS",
    "MANIFEST",
    "SCHEMA",
    "VERSIONS",
    "FileEntry",
    "Manifest",
    "NotPublishedError",
    "PUBLISHING",
    "PUBLISH_STALE_SECONDS",
    "Registry",
    "SUPERSEDED",
    "build_manifest",
    "collect",
    "content_hash",
    "fetch",
    "file_uri",
    "in_progress",
    "is_published",
    "new_manifest",
    "publish",
    "publish_replacing",
    "read_bytes",
    "read_manifest",
    "read_text",
    "scan_dir",
    "seal",
]
