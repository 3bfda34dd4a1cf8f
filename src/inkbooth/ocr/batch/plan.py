"""The plan of a batch run: the documents listed once, so every shard works from one snapshot.

May import ``inkbooth.ocr.batch.shard`` (for the listing).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from inkbooth import shards
from inkbooth.ocr.batch.shard import scan_documents


def plan_documents(documents: str, num_shards: int) -> dict[str, Any]:
    """The documents under ``documents``, the files left out (and why) and the shard specs (``i/n``)."""
    shards.specs(num_shards)  # validates the count before anything is listed
    keys, skipped = scan_documents(documents)
    if not keys:
        raise ValueError(f"{documents}: no documents found"
                         + (f" ({len(skipped)} file(s) left out, e.g. {skipped[0]['key']}: {skipped[0]['reason']})"
                            if skipped else ""))
    return {"documents": documents, "keys": keys, "skipped": skipped,
            "shards": shards.specs(min(num_shards, len(keys))), "created": time.time()}


def write_plan(plan: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(plan, indent=1, ensure_ascii=True), encoding="utf-8")


def read_plan(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
