"""A pipeline run's own state on the store, and what happens when the run ends.

KFP keeps a run's artifacts under ``<pipeline root>/<pipeline name>/<run id>/<task>/<salt>/<output>``
(kfp.local: ``<pipeline root>/<run name>/<task>/<output>``). The part up to the run id is the
run's root: state that must outlive a pod (training checkpoints) goes there, so a retried or
preempted pod of the same run finds it, and no other run does.

When the run ends, its exit task (``dsl.ExitHandler``) calls ``finish_run``: it names the tasks
that failed (asked of the KFP API, the only place that knows them) and removes partial work, i.e.
checkpoints of this run that never got their manifest, and, once the run has succeeded, the run's
own checkpoints, which the registered model has made dead weight.

Under a ``checkpoints:`` prefix shared by many runs, only what this run wrote is removed: torn
checkpoints in run folders where this run recorded that it writes (``inkbooth.checkpoints.runs_of``:
the training process knows its run from ``INKBOOTH_RUN_ID``), and in those only versions that no
other run is publishing now (``inkbooth.artifacts.in_progress``; a marker of another run goes stale
only after ``PUBLISH_STALE_SECONDS``). Whatever is left is listed in the report (``left``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth import checkpoints as ckpt

log = logging.getLogger(__name__)

SUCCEEDED = "SUCCEEDED"
# In-cluster address of the KFP API (standalone and Kubeflow installs alike).
KFP_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # the kfp client's default (set_volume_credentials)
# Checkpoints are <prefix>/<run key>/step-NNNNNNNN/, manifest last (inkbooth.checkpoints).
_STEP_DIR = re.compile(r"^(.*?(?:^|/)step-\d+)/")


def run_root(artifact_uri: str, run_id: str) -> str:
    """The run's root, from the URI of one of its output artifacts and the run id.

    On a KFP backend the run id is a segment of every artifact URI; kfp.local's paths have no run
    id, and its run folder is two levels above the artifact.
    """
    parts = artifact_uri.rstrip("/").split("/")
    if run_id and run_id in parts[:-1]:
        cut = len(parts) - 1 - parts[::-1].index(run_id)
        return "/".join(parts[:cut + 1])
    if len(parts) < 4:
        raise ValueError(f"{artifact_uri!r}: not a KFP artifact URI (run id {run_id!r} not in it)")
    return "/".join(parts[:-2])


def run_checkpoints(artifact_uri: str, run_id: str) -> str:
    """Where this run's training checkpoints go by default: ``<run root>/checkpoints``."""
    root = run_root(artifact_uri, run_id)
    if "://" in root and not storage.is_s3(root):
        raise ValueError(f"pipeline root {root!r}: training checkpoints need an s3:// pipeline root "
                         "(or set the pipeline's checkpoints parameter to an s3:// prefix)")
    return storage.join(root, "checkpoints")


def own_checkpoints(run_id: str) -> None:
    """Record this run as the writer of the checkpoints this process (and the training processes it
    starts) publishes, so that the exit task of another run sharing the prefix leaves them alone."""
    if run_id:
        os.environ.setdefault(ckpt.OWNER_ENV, run_id)


def resumable(train_config: Mapping[str, Any]) -> dict[str, Any]:
    """A pipeline's training config: a retried pod resumes from its run's latest checkpoint unless told otherwise."""
    return {"resume": "latest", **train_config}


def failed_tasks(kfp_api: str, run_id: str) -> list[dict[str, str]]:
    """The run's tasks that failed themselves (not the groups above them), with their error messages."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    # Multi-user KFP answers only with a token of the pipelines audience, which the kfp client does not
    # look for when given a host; the profile's PodDefault mounts it (inkbooth manifests, multi-user).
    token = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", KFP_TOKEN_PATH)
    credentials = ServiceAccountTokenVolumeCredentials(token) if os.path.isfile(token) else None
    run = kfp.Client(host=kfp_api, credentials=credentials).get_run(run_id)
    tasks = (run.run_details.task_details if run.run_details else None) or []
    failed = []
    for t in tasks:
        if t.state == "FAILED" and not t.child_tasks:
            failed.append({"task": t.display_name or t.task_id or "?",
                           "error": (t.error.message if t.error and t.error.message else "")})
    return failed


def _torn(prefix: str) -> list[str]:
    files = storage.list_files(prefix)
    published, seen = set(), set()
    for rel in files:
        m = _STEP_DIR.match(rel)
        if m:
            seen.add(m.group(1))
            if rel == f"{m.group(1)}/{artifacts.MANIFEST}":
                published.add(m.group(1))
    return sorted(seen - published)


def partial_checkpoints(prefix: str) -> list[str]:
    """Checkpoint folders under ``prefix`` whose manifest has not landed: a pod died while publishing,
    or one is publishing now (of any run: see ``finish_run`` for which of them it removes)."""
    return [storage.join(prefix, d) for d in _torn(prefix)]


def _remove_torn(prefix: str, rel: str, run_id: str, mine: set[str] | None) -> str:
    """Remove what this run wrote of the torn checkpoint ``<prefix>/<rel>``; why anything is left ("" if nothing).

    ``mine``: the run keys this run recorded (None: every one, the prefix is the run's own).
    """
    uri = storage.join(prefix, rel)
    key = rel.split("/")[0] if "/" in rel else ""
    if mine is not None and key not in mine:
        return (f"belongs to another run: run {run_id} did not record that it writes in {key or 'this folder'} "
                f"({ckpt.RUNS_DIR}/)")
    ours = {run_id} if mine is not None else {run_id, ""}
    busy = {m["root"]: m for m in artifacts.in_progress(uri) if not m["stale"] and m["owner"] not in ours}
    doomed = [f for f in storage.list_files(uri) if "/".join(f.split("/")[:2]) not in busy]
    for f in doomed:  # exactly these: a version another run starts meanwhile is not among them
        storage.delete(storage.join(uri, f))
    loc = storage.parse(uri)
    if not loc.is_s3 and loc.path.is_dir():  # the folders the files left empty
        for folder, _, _ in sorted(os.walk(loc.path), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # not empty (a publish began meanwhile): kept
                os.rmdir(folder)
    if not busy:
        return ""
    m = min(busy.values(), key=lambda m: m["at"])
    since = dt.datetime.fromtimestamp(m["at"], dt.UTC).isoformat(timespec="seconds")
    return f"another run ({m['owner'] or 'not recorded'}) is publishing it since {since}"


def finish_run(status: Mapping[str, Any], run_id: str, outcome: str, report_path: str | Path, *,
               kfp_api: str = "", checkpoints: str = "", clean_checkpoints: bool = True) -> dict[str, Any]:
    """The exit task: report how the run ended (naming failed tasks) and remove its partial work.

    ``status`` is KFP's PipelineTaskFinalStatus of the guarded group; ``outcome`` the URI of the exit
    task's own output artifact (which locates the run's root); the report goes to ``report_path``.
    """
    state = str(status.get("state") or "UNKNOWN")
    report: dict[str, Any] = {"run_id": run_id, "state": state, "failed_tasks": [], "removed": [], "left": []}
    if state != SUCCEEDED:
        report["error"] = (status.get("error") or {}).get("message", "")
        if kfp_api:
            try:
                report["failed_tasks"] = failed_tasks(kfp_api, run_id)
            except Exception as e:  # noqa: BLE001 - the report must still be written
                report["failed_tasks_error"] = f"cannot ask {kfp_api} for the run's tasks: {type(e).__name__}: {e}"
    if clean_checkpoints:
        owned = not checkpoints
        prefix = checkpoints or run_checkpoints(outcome, run_id)
        if state == SUCCEEDED and owned:
            # The model is exported and registered: this run's checkpoints are of no further use.
            if storage.delete_prefix(prefix):
                report["removed"].append(prefix)
        else:
            # Kept for a retry of the run (or the next run on this prefix); only this run's torn ones go.
            mine = None if owned else set(ckpt.runs_of(prefix, run_id))
            for rel in _torn(prefix):
                why = _remove_torn(prefix, rel, run_id, mine)
                if why:
                    report["left"].append({"checkpoint": storage.join(prefix, rel), "reason": why})
                else:
                    report["removed"].append(storage.join(prefix, rel))
        report["checkpoints"] = prefix
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(json.dumps(report, indent=2))
    if state == SUCCEEDED:
        log.info("run %s succeeded", run_id)
    else:
        named = "; ".join(f"{t['task']}: {t['error'] or 'failed'}" for t in report["failed_tasks"])
        log.error("run %s %s%s", run_id, state.lower(), f" at {named}" if named else
                  f" ({report.get('failed_tasks_error') or 'no KFP API given to name the failed task'})")
    for uri in report["removed"]:
        log.info("removed %s", uri)
    for item in report["left"]:
        log.info("left %s: %s", item["checkpoint"], item["reason"])
    return report
