"""A pipeline run's own state on the store, and what happens when the run ends.

KFP keeps a run's artifacts under ``<pipeline root>/<pipeline name>/<run id>/<task>/<salt>/<output>``
(kfp.local: ``<pipeline root>/<run name>/<task>/<output>``). The part up to the run id is the
run's root: state that must outlive a pod (training checkpoints) goes there, so a retried or
preempted pod of the same run finds it, and no other run does.

When the run ends, its exit task (``dsl.ExitHandler``) calls ``finish_run``: it names the tasks
that failed (asked of the KFP API, the only place that knows them) and removes partial work, i.e.
checkpoints that never got their manifest, and, once the run has succeeded, the run's own
checkpoints, which the registered model has made dead weight.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage

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


def partial_checkpoints(prefix: str) -> list[str]:
    """Checkpoint folders under ``prefix`` whose manifest never landed (a pod died while publishing)."""
    files = storage.list_files(prefix)
    published, seen = set(), set()
    for rel in files:
        m = _STEP_DIR.match(rel)
        if m:
            seen.add(m.group(1))
            if rel == f"{m.group(1)}/{artifacts.MANIFEST}":
                published.add(m.group(1))
    return sorted(storage.join(prefix, d) for d in seen - published)


def finish_run(status: Mapping[str, Any], run_id: str, outcome: str, report_path: str | Path, *,
               kfp_api: str = "", checkpoints: str = "", clean_checkpoints: bool = True) -> dict[str, Any]:
    """The exit task: report how the run ended (naming failed tasks) and remove its partial work.

    ``status`` is KFP's PipelineTaskFinalStatus of the guarded group; ``outcome`` the URI of the exit
    task's own output artifact (which locates the run's root); the report goes to ``report_path``.
    """
    state = str(status.get("state") or "UNKNOWN")
    report: dict[str, Any] = {"run_id": run_id, "state": state, "failed_tasks": [], "removed": []}
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
            # Kept for a retry of the run (or the next run on this prefix); only torn ones go.
            for partial in partial_checkpoints(prefix):
                storage.delete_prefix(partial)
                report["removed"].append(partial)
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
    return report
