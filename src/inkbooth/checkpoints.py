"""Checkpoints of resumable work, for any trainer: save, list, resume, each bound to its run.

A checkpoint belongs to the run that wrote it. A trainer describes its run by an *identity*: a
small mapping of what decides the training trajectory (content hashes of the base model and the
data, a hash of the training config, the process count...). Checkpoints live at::

    <prefix>/<run key>/step-NNNNNNNN/      one artifact each (files + manifest.json, manifest last)
    <prefix>/<run key>/run.json            the identity, for messages about other runs
    <prefix>/<run key>/pipeline-runs/<id>.json   one per pipeline run that wrote there (``owner``)

where ``<run key>`` hashes the identity. So a fixed ``checkpoints:`` prefix shared by many runs
(a retrain with one more subject image, two trainings beside each other) keeps each run's
checkpoints apart; ``resume`` only ever looks at the caller's own run. Checkpoints of other runs
are ignored with a message that says what differs, and an explicit step that exists only in
another run is refused.

Resuming verifies the checkpoint against its manifest (every file's SHA-256). A damaged newest
checkpoint (truncated file, missing file, unreadable manifest) is skipped with a warning and the
newest intact one is used instead. A checkpoint in this run's folder whose manifest records another
run's identity (copied by hand) is not used either, and said to belong to another run, not to be
damaged.

The identity is bound to the content as well, not only written in the manifest: each checkpoint
holds ``checkpoint-run.json`` (``BINDING``: the run's identity, the step and the content hash of
every other file), which the manifest lists and hashes like any file. A checkpoint whose manifest
claims this run but whose content was written by another run, at another step, or whose files are
not the ones written with it (a manifest edited to match swapped files) is refused with
``CheckpointRefused``, and so is one holding a pickle that would do more than rebuild tensors
(``inkbooth.pickles``): those are not accidents to fall back from, but someone else's files. A
checkpoint without the binding (written before it existed, or with it removed) is not used.
This catches forgeries that edit a manifest, move files or replay a step; someone who can write the
store and reruns this code's ``save`` with the run's identity can still write a checkpoint it
accepts, which is why its pickles are checked on their own.

The *owner* of a ``RunCheckpoints`` is the pipeline run (KFP run id) of the process that writes:
``owner=`` or the environment variable ``INKBOOTH_RUN_ID``. It is recorded beside the run key
(``pipeline-runs/``) and in the marker of each checkpoint being published, so that a run's exit
task (``inkbooth.lifecycle.finish_run``) removes the torn checkpoints its own run wrote and leaves
those another run is still uploading (``runs_of``).

Staging (the folder a trainer saves its state into before it is published) is a fresh temporary
folder from :func:`new_staging_root`, never a folder inside an output, so a killed run leaves no
stray file that a later manifest could pick up.

Use::

    run = RunCheckpoints(prefix, {"base_model": h1, "data": h2, "config": config_hash(cfg)},
                         kind="my-checkpoint", keep=2)
    found = run.resume("latest")          # None, or a ResumePoint (step, uri, verified local folder)
    ...
    run.save(staged_folder, step, metrics={...})   # publish, then prune beyond ``keep``
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inkbooth import artifacts, pickles, storage

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
# Inside each checkpoint: the run, the step and the content hash of the other files (see above).
BINDING = "checkpoint-run.json"
IDENTITY = "run_identity"
# The pipeline run a training process belongs to (a pipeline's train component sets it to the KFP run id).
OWNER_ENV = "INKBOOTH_RUN_ID"
RUNS_DIR = "pipeline-runs"
_STEP = re.compile(r"^step-(\d{8})$")


class CheckpointRefused(ValueError):
    """A checkpoint that must not be resumed: not this run's content, or files that could run code."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint: its step, its URI and the key of the run it belongs to."""

    step: int
    uri: str
    run: str


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """A checkpoint chosen for resuming, verified, with a local folder holding its files."""

    step: int
    uri: str
    path: Path


def canonical(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The identity as plain JSON data (keys sorted); values must be JSON-able."""
    try:
        return json.loads(json.dumps(dict(identity), sort_keys=True))
    except TypeError as e:
        raise ValueError(f"a run identity must be JSON-able: {e}") from None


def run_key(identity: Mapping[str, Any]) -> str:
    """The folder name of a run: 16 hex digits of the SHA-256 of its canonical identity."""
    blob = json.dumps(canonical(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(prefix: str) -> list[Checkpoint]:
    """Every published checkpoint under ``prefix``, of every run, oldest step first.

    Unfinished checkpoints (no manifest) are not listed. Checkpoints written by older versions
    directly under the prefix (``<prefix>/step-N``, no run) are listed with run ``""``.
    """
    found = []
    for rel in storage.list_files(prefix):
        parts = rel.split("/")
        if parts[-1] != artifacts.MANIFEST:
            continue
        if len(parts) == 3 and _STEP.match(parts[1]):
            found.append(Checkpoint(int(parts[1][5:]), storage.join(prefix, parts[0], parts[1]), parts[0]))
        elif len(parts) == 2 and _STEP.match(parts[0]):
            found.append(Checkpoint(int(parts[0][5:]), storage.join(prefix, parts[0]), ""))
    return sorted(found, key=lambda c: (c.step, c.run))


def new_staging_root() -> Path:
    """A fresh folder for staging checkpoints, in the temporary directory (never inside an output)."""
    return Path(tempfile.mkdtemp(prefix="inkbooth-staging-"))


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any] | None) -> list[str]:
    """Names of the identity fields in which two runs differ (``["unknown"]`` without theirs)."""
    if theirs is None:
        return ["unknown (no run identity recorded)"]
    keys = sorted(set(ours) | set(theirs))
    return [k for k in keys if ours.get(k) != theirs.get(k)]


def record_owner(run_uri: str, owner: str) -> None:
    """Record that the pipeline run ``owner`` writes checkpoints in the run folder ``run_uri``."""
    target = storage.join(run_uri, RUNS_DIR, f"{owner}.json")
    try:
        storage.write_text(target, json.dumps({"run": owner, "at": time.time()}) + "\n", if_absent=True)
    except storage.AlreadyExistsError:
        pass


def runs_of(prefix: str, owner: str) -> list[str]:
    """The run keys under ``prefix`` in which the pipeline run ``owner`` recorded that it writes."""
    want = f"{owner}.json"
    return sorted({parts[0] for parts in (rel.split("/") for rel in storage.list_files(prefix))
                   if len(parts) == 3 and parts[1:] == [RUNS_DIR, want]})


def _owner(owner: str | None) -> str:
    owner = os.environ.get(OWNER_ENV, "") if owner is None else owner
    if owner:
        try:
            storage.check_part(owner, "pipeline run id")
        except storage.UnsafeKeyError as e:
            log.warning("%s; checkpoints are written without it", e)
            return ""
        if "/" in owner:
            log.warning("pipeline run id %r has a '/'; checkpoints are written without it", owner)
            return ""
    return owner


class RunCheckpoints:
    """The checkpoints of one run under a shared prefix, written by the pipeline run ``owner``
    (default: ``$INKBOOTH_RUN_ID``; empty: none recorded)."""

    def __init__(self, prefix: str, identity: Mapping[str, Any], *, kind: str = "checkpoint", keep: int = 2,
                 owner: str | None = None) -> None:
        self.prefix = prefix
        self.identity = canonical(identity)
        self.key = run_key(self.identity)
        self.uri = storage.join(prefix, self.key)
        self.kind = kind
        self.keep = keep
        self.owner = _owner(owner)

    # ---- writing ----------------------------------------------------------------------------------

    def save(self, local_dir: str | Path, step: int, *, metrics: Mapping[str, Any] | None = None,
             config: Mapping[str, Any] | None = None) -> Checkpoint:
        """Publish the state in ``local_dir`` as this run's checkpoint at ``step``, then prune.

        The manifest records the run identity, and ``BINDING`` (written into ``local_dir``) binds it
        to the content. Checkpoints of this run at later steps than
        ``step`` are from a timeline that was abandoned (a resume fell back past them) and go.
        """
        self._write_run_file()
        if self.owner:
            record_owner(self.uri, self.owner)
        self._bind(Path(local_dir), step)
        target = storage.join(self.uri, step_name(step))
        artifacts.publish(local_dir, target, kind=self.kind, metrics={"step": step, **(metrics or {})},
                          config=dict(config or {}), lineage={IDENTITY: self.identity, "run": self.key},
                          overwrite=True, owner=self.owner)
        mine = self.list()
        stale = [c for c in mine if c.step > step]
        kept = [c for c in mine if c.step <= step]
        doomed = stale + (kept[:-self.keep] if self.keep > 0 else [])
        for old in doomed:
            _delete(old.uri)
        return Checkpoint(step, target, self.key)

    def _bind(self, local_dir: Path, step: int) -> None:
        """Write ``BINDING`` into the staged state: this run, this step, the hash of the other files."""
        (local_dir / BINDING).unlink(missing_ok=True)
        record = {"run": self.key, "identity": self.identity, "step": step,
                  "content": artifacts.content_hash(artifacts.scan_dir(local_dir))}
        (local_dir / BINDING).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")

    def _write_run_file(self) -> None:
        run_file = storage.join(self.uri, RUN_FILE)
        try:
            storage.write_text(run_file, json.dumps(self.identity, indent=1, sort_keys=True) + "\n", if_absent=True)
        except storage.AlreadyExistsError:
            pass

    # ---- reading ----------------------------------------------------------------------------------

    def list(self) -> list[Checkpoint]:
        """This run's published checkpoints, oldest first."""
        # Below our own folder, our checkpoints are the "run-less" <uri>/step-N entries.
        return [Checkpoint(c.step, c.uri, self.key) for c in list_checkpoints(self.uri) if c.run == ""]

    def others(self) -> dict[str, list[Checkpoint]]:
        """Checkpoints under the prefix that belong to other runs (or to no recorded run), by run key."""
        out: dict[str, list[Checkpoint]] = {}
        for c in list_checkpoints(self.prefix):
            if c.run != self.key:
                out.setdefault(c.run, []).append(c)
        return out

    def _their_identity(self, run: str) -> dict[str, Any] | None:
        if not run:
            return None
        try:
            return json.loads(storage.read_text(storage.join(self.prefix, run, RUN_FILE)))
        except (storage.StorageError, ValueError):
            return None

    def _explain_others(self, others: dict[str, list[Checkpoint]]) -> str:
        parts = []
        for run, found in sorted(others.items()):
            what = ", ".join(differences(self.identity, self._their_identity(run)))
            steps = ", ".join(str(c.step) for c in found)
            parts.append(f"{run or '(no run)'} at step(s) {steps}, differing in: {what}")
        return "; ".join(parts)

    def resume(self, which: str | int = "latest") -> ResumePoint | None:
        """The checkpoint to resume from: ``"latest"``, a step number, or ``""`` (none).

        ``latest`` takes this run's newest intact checkpoint (a damaged newer one is skipped with
        a warning) or None when this run has none; checkpoints of other runs are never used. A
        step number must name an intact checkpoint of this run, or ValueError says why not.
        Either way CheckpointRefused is raised for a checkpoint whose manifest claims this run but
        whose content does not match it, or whose pickles could run code (nothing is loaded).
        """
        which = str(which)
        if which == "":
            return None
        mine = self.list()
        if which != "latest":
            if not which.isdigit():
                raise ValueError(f"resume must be '', 'latest' or a step number, got {which!r}")
            wanted = int(which)
            exact = [c for c in mine if c.step == wanted]
            if not exact:
                theirs = {run: [c for c in cs if c.step == wanted] for run, cs in self.others().items()}
                theirs = {run: cs for run, cs in theirs.items() if cs}
                if theirs:
                    raise ValueError(f"{self.prefix}: the checkpoint at step {wanted} belongs to another run "
                                     f"({self._explain_others(theirs)}); refusing to resume this run from it")
                raise ValueError(f"{self.prefix}: this run has no checkpoint at step {wanted}"
                                 + (f" (it has steps {', '.join(str(c.step) for c in mine)})" if mine else ""))
            point, why = self._verified(exact[0])
            if point is None and why.startswith(_FOREIGN):
                raise ValueError(f"{exact[0].uri}: the checkpoint at step {wanted} {why}; "
                                 "refusing to resume this run from it")
            if point is None:
                raise ValueError(f"{exact[0].uri}: the checkpoint at step {wanted} is {why}; "
                                 "resume from 'latest' to use the newest intact one")
            return point
        skipped: dict[str, list[int]] = {}
        for c in reversed(mine):
            point, why = self._verified(c)
            if point is not None:
                if skipped:
                    log.warning("%s: resuming from step %d, the newest intact checkpoint (%s)", self.uri, c.step,
                                _skipped(skipped))
                return point
            skipped.setdefault(why, []).append(c.step)
        others = self.others()
        if skipped and set(skipped) == {_DAMAGED}:
            log.warning("%s: every checkpoint of this run is damaged (steps %s); starting fresh", self.uri,
                        ", ".join(str(s) for s in skipped[_DAMAGED]))
        elif skipped:
            log.warning("%s: no checkpoint here can be used (%s); starting fresh", self.uri, _skipped(skipped))
        elif others:
            log.warning("resume=latest: no checkpoint of this run (%s) under %s; ignoring the checkpoints of "
                        "other runs there: %s; starting fresh", self.key, self.prefix, self._explain_others(others))
        else:
            log.info("resume=latest: no checkpoint under %s; starting fresh", self.uri)
        return None

    def _verified(self, c: Checkpoint) -> tuple[ResumePoint | None, str]:
        """The checkpoint fetched and checked against its manifest and our identity, or None and why
        not: it belongs to another run (``_FOREIGN...``), is damaged, or was deleted while being read."""
        try:
            manifest = artifacts.read_manifest(c.uri)
            theirs = manifest.lineage.get(IDENTITY)
            if theirs != self.identity:
                what = ", ".join(differences(self.identity, theirs if isinstance(theirs, dict) else None))
                log.warning("%s: this checkpoint belongs to another run: its recorded run identity differs from "
                            "this run's (in: %s); not used", c.uri, what)
                return None, f"{_FOREIGN} (its recorded run identity differs in: {what})"
            path = artifacts.fetch(c.uri)
        except (storage.StorageError, KeyError, TypeError, ValueError) as e:
            if not artifacts.is_published(c.uri):
                log.warning("%s: checkpoint deleted while it was being read, not used: %s", c.uri, e)
                return None, _GONE
            log.warning("%s: checkpoint damaged, not used: %s", c.uri, e)
            return None, _DAMAGED
        if BINDING not in {f.path for f in manifest.files}:
            log.warning("%s: this checkpoint does not hold %s (written before checkpoints were bound to their "
                        "run, or the binding was removed); not used", c.uri, BINDING)
            return None, _UNBOUND
        self._check_content(c, manifest, path)
        return ResumePoint(c.step, c.uri, path), ""

    def _check_content(self, c: Checkpoint, manifest: artifacts.Manifest, path: Path) -> None:
        """Raise CheckpointRefused unless the verified files are the ones this run wrote at this step,
        and every pickle among them holds tensor data only."""
        refused = f"{c.uri}: checkpoint refused, nothing was loaded from it"
        advice = "if you did not expect this, inspect it and delete it, or resume from '' to start fresh"
        try:
            bound = json.loads((path / BINDING).read_text())
            theirs, step, content = bound["identity"], bound["step"], bound["content"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointRefused(f"{refused}: its {BINDING} cannot be read ({e}); {advice}") from None
        if theirs != self.identity or bound.get("run") != self.key:
            what = ", ".join(differences(self.identity, theirs if isinstance(theirs, dict) else None))
            raise CheckpointRefused(f"{refused}: its manifest claims this run, but its content was written by "
                                    f"another run (differing in: {what}); {advice}")
        if step != c.step:
            raise CheckpointRefused(f"{refused}: its content was written at step {step}, not {c.step}; {advice}")
        if artifacts.content_hash([f for f in manifest.files if f.path != BINDING]) != content:
            raise CheckpointRefused(f"{refused}: its files are not the ones this run wrote at step {c.step} "
                                    f"(their content hash differs from the one in {BINDING}); {advice}")
        try:
            pickles.check_folder(path)
        except pickles.UnsafePickleError as e:
            raise CheckpointRefused(f"{refused}: {e}; {advice}") from None


_FOREIGN, _DAMAGED, _GONE = "belongs to another run", "damaged", "deleted while it was being read"
_UNBOUND = f"not bound to its run (no {BINDING})"


def _skipped(skipped: dict[str, list[int]]) -> str:
    """What resuming passed over: ``damaged: step 3``, ``step 4 belongs to another run (...)``..."""
    parts = []
    for why, steps in skipped.items():
        listed = ", ".join(str(s) for s in steps)
        parts.append(f"damaged: step {listed}" if why == _DAMAGED else f"step {listed} {why}")
    return "; ".join(parts)


def _delete(uri: str) -> None:
    """Delete a checkpoint: the manifest first, so a half-deleted one is never taken for finished."""
    storage.delete(storage.join(uri, artifacts.MANIFEST))
    storage.delete_prefix(uri)
