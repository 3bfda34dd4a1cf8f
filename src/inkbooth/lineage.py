"""How the components hand artifacts to each other, so that ML Metadata sees one unbroken lineage.

Two kinds of KFP artifacts carry our data between stages:

* **Imported inputs** (``dsl.importer``): a base model, subject images, ground truth. The artifact's
  URI is where the data lives. On a cluster KFP's launcher copies every input artifact into the pod
  before the step starts (under ``/s3/<bucket>/...``); locally (kfp.local) nothing is copied.
  :func:`location` takes the copy when there is one, else the URI, so nothing is fetched twice.
* **Pointers** to what a stage published in our own store, which outlives the run and is shared by
  runs (a class-image set reused across runs, a registered model version, the OCR results): the
  artifact sits in the pipeline root, as KFP placed it, holds ``pointer.json`` and has the real
  location in its metadata (``uri``), with its content hash. The artifact's own URI is not
  rewritten to the target, because KFP's launcher (2.x with ML Metadata) uploads every output
  artifact and refuses a URI outside the run's pipeline root.

A large output that many steps read (the ONNX export: every OCR shard, the merge, evaluation and
registration) is a pointer too, to files published :func:`beside` the artifact: the launcher would
otherwise copy all of it (every variant) into each reader's pod, into an emptyDir it creates without
a size limit (KFP 2.17.0 ``backend/src/v2/compiler/argocompiler/container.go:472-508``), and a
reader fetches only what it reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

POINTER = "pointer.json"


def location(artifact: Any) -> str:
    """Where a step reads an input artifact from: KFP's local copy if it made one, else its URI."""
    path = artifact.path
    if path and path != artifact.uri and os.path.exists(path):
        return path
    return artifact.uri


def point(artifact: Any, uri: str, **metadata: Any) -> None:
    """Make the output ``artifact`` a pointer to ``uri`` (with ``metadata`` shown in the KFP UI)."""
    record = {"uri": uri, **metadata}
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    artifact.metadata.update(record)


def beside(artifact: Any, suffix: str) -> str:
    """A location next to the output ``artifact`` in the run's pipeline root, for files it points to."""
    return f"{artifact.uri.rstrip('/')}-{suffix}"


def target(artifact: Any) -> str:
    """The location an input pointer artifact points to."""
    uri = artifact.metadata.get("uri")
    if uri:
        return uri
    try:
        return json.loads(Path(artifact.path).read_text(encoding="utf-8"))["uri"]
    except (OSError, ValueError, KeyError):
        raise ValueError(f"artifact {artifact.name or artifact.uri!r} is not a pointer (no 'uri' in its metadata "
                         f"or {POINTER})") from None
