"""A run's own state (the run root, where retried training pods resume) and its exit task."""

from __future__ import annotations

import json
import logging
import threading
import uuid

import pytest

from inkbooth import artifacts, checkpoints, lifecycle, lineage, runs, storage
from tests.kfpstandin import KFPStandIn

RUN_ID = "5b2f6c9e-0d1a-4c3b-9e7f-1a2b3c4d5e6f"
OTHER_RUN = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


def test_run_root_from_backend_and_local_uris():
    backend = f"s3://pipes/v2/artifacts/inkbooth-dreambooth/{RUN_ID}/train/4481/trained"
    assert lifecycle.run_root(backend, RUN_ID) == f"s3://pipes/v2/artifacts/inkbooth-dreambooth/{RUN_ID}"
    assert lifecycle.run_checkpoints(backend, RUN_ID) == f"s3://pipes/v2/artifacts/inkbooth-dreambooth/{RUN_ID}/checkpoints"
    # kfp.local: <root>/<pipeline>-<time>/<task>/<output>, and its run id is not in the path
    local = "/data/kfp/inkbooth-dreambooth-2026-01-01-10-00-00-000000/train/trained"
    assert lifecycle.run_root(local, "81723") == "/data/kfp/inkbooth-dreambooth-2026-01-01-10-00-00-000000"
    with pytest.raises(ValueError, match="need an s3:// pipeline root"):
        lifecycle.run_checkpoints(f"gs://pipes/inkbooth-dreambooth/{RUN_ID}/train/1/trained", RUN_ID)


class Killed(Exception):
    pass


def test_a_retried_training_pod_resumes_from_the_run_root(tiny_sd, subject_dir, class_set, bucket, tmp_path,
                                                          monkeypatch):
    """The train step as KFP runs it: attempt 1 dies after a checkpoint; attempt 2 (a new pod, new output dir) resumes."""
    from kfp import dsl

    from inkbooth.components.db_train.component import train as component
    from inkbooth.dreambooth import train as train_mod

    real = train_mod.train_dreambooth
    steps: list[int] = []

    def die_at_3(step):
        if step == 3:
            raise Killed

    def attempt(n: int):
        # On a cluster the output is s3://<root>/<pipeline>/<run id>/train/<salt>/trained, mounted locally.
        out = dsl.Model(name="trained", uri=f"{bucket}/v2/artifacts/inkbooth-dreambooth/{RUN_ID}/train/{n}/trained",
                        metadata={})
        out.set_path(str(tmp_path / f"pod-{n}" / "trained"))
        hook = die_at_3 if n == 1 else steps.append
        monkeypatch.setattr(train_mod, "train_dreambooth", lambda *a, **kw: real(*a, _on_step=hook, **kw))
        # Inputs as the pipeline passes them: pointers (base model, class set) and the imported subject images.
        base, class_sets = dsl.Model(name="base_model", uri=str(tmp_path / "base")), []
        lineage.point(base, str(tiny_sd))
        class_sets.append(dsl.Dataset(name="class_images", uri=str(tmp_path / f"class-{n}")))
        lineage.point(class_sets[0], class_set)
        metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / f"pod-{n}" / "metrics"))
        report = dsl.HTML(name="report", uri=str(tmp_path / f"pod-{n}" / "report"))
        component.python_func(base_model=base, instance_images=dsl.Dataset(name="subject", uri=str(subject_dir)),
                              class_sets=class_sets, checkpoints="",
                              config={"max_train_steps": 4, "checkpoint_every": 2, "learning_rate": 1e-3},
                              run_id=RUN_ID, trained=out, metrics=metrics, report=report)

    with pytest.raises(Killed):
        attempt(1)
    root = f"{bucket}/v2/artifacts/inkbooth-dreambooth/{RUN_ID}"
    assert [c.step for c in checkpoints.list_checkpoints(f"{root}/checkpoints")] == [2], "checkpoints in the store"
    attempt(2)
    assert steps == [3, 4], "the retried pod continued from the run's step-2 checkpoint"
    assert artifacts.read_manifest(str(tmp_path / "pod-2" / "trained")).metrics["resumed_from_step"] == 2
    assert (tmp_path / "pod-2" / "report").read_text().startswith("<!DOCTYPE html>"), "the training report"


def _checkpoint(prefix: str, step: int, published: bool, tmp_path) -> None:
    folder = tmp_path / f"ckpt-{step}"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 10)
    uri = storage.join(prefix, "0f3a9c1d2e4b5a6f", f"step-{step:08d}")  # <prefix>/<run key>/step-N
    if published:
        artifacts.publish(folder, uri, kind="dreambooth-checkpoint")
    else:  # a pod died while uploading: files, no manifest
        storage.upload_dir(folder, uri)


def _failed_run():
    """GET /runs/<id> of a DreamBooth run that failed at fine-tune, built from the API's own models
    (kfp-server-api, what the client is generated from), as the exit task receives it."""
    from kfp_server_api import models

    ids = {name: str(uuid.uuid5(uuid.NAMESPACE_URL, name)) for name in
           ("inkbooth-dreambooth", "exit-handler-1", "class-images", "fine-tune", "finish-run")}
    at = "2026-06-01T10:00:00Z"

    def task(name, state, error="", children=()):
        return models.V2beta1PipelineTaskDetail(
            run_id=RUN_ID, task_id=ids[name], display_name=name, state=state, create_time=at, start_time=at,
            error=models.GoogleRpcStatus(code=2, message=error, details=[]) if error else None,
            pod_name=f"dog-{name}-1234", execution_id="17",
            child_tasks=[models.PipelineTaskDetailChildTask(task_id=ids[c], pod_name=f"dog-{c}-1234")
                         for c in children],
            state_history=[models.V2beta1RuntimeStatus(update_time=at, state=state)])

    return models.V2beta1Run(
        run_id=RUN_ID, experiment_id=str(uuid.uuid4()), display_name="dog", state="FAILED", created_at=at,
        storage_state="AVAILABLE", error=models.GoogleRpcStatus(code=2, message="exit-handler-1 failed"),
        run_details=models.V2beta1RunDetails(task_details=[
            task("inkbooth-dreambooth", "FAILED", children=["exit-handler-1", "finish-run"]),
            task("exit-handler-1", "FAILED", children=["fine-tune", "class-images"]),
            task("class-images", "SUCCEEDED"),
            task("fine-tune", "FAILED", "OOMKilled: container exceeded its memory limit"),
            task("finish-run", "RUNNING"),
        ]))


def test_the_exit_task_names_the_failed_task_and_drops_torn_checkpoints(bucket, tmp_path, caplog):
    root = f"{bucket}/v2/artifacts/inkbooth-dreambooth/{RUN_ID}"
    _checkpoint(f"{root}/checkpoints", 2, True, tmp_path)
    _checkpoint(f"{root}/checkpoints", 4, False, tmp_path)
    with KFPStandIn() as api, caplog.at_level(logging.INFO, logger="inkbooth.lifecycle"):
        api.runs[RUN_ID] = _failed_run()
        report = lifecycle.finish_run({"state": "FAILED", "error": {"message": "exit-handler-1 failed"}}, RUN_ID,
                                      f"{root}/finish-run/77/outcome", tmp_path / "outcome", kfp_api=api.url)
    assert report["failed_tasks"] == [{"task": "fine-tune", "error": "OOMKilled: container exceeded its memory limit"}]
    assert "at fine-tune: OOMKilled" in caplog.text
    assert json.loads((tmp_path / "outcome").read_text()) == report
    assert report["removed"] == [f"{root}/checkpoints/0f3a9c1d2e4b5a6f/step-00000004"], "only the torn one goes"
    assert [c.step for c in checkpoints.list_checkpoints(f"{root}/checkpoints")] == [2], "a retry resumes from it"
    assert storage.list_files(f"{root}/checkpoints") == [
        "0f3a9c1d2e4b5a6f/step-00000002/manifest.json", "0f3a9c1d2e4b5a6f/step-00000002/model.safetensors"]


def test_after_success_the_runs_own_checkpoints_go_but_a_given_prefix_stays(bucket, tmp_path):
    root = f"{bucket}/v2/artifacts/inkbooth-dreambooth/{RUN_ID}"
    _checkpoint(f"{root}/checkpoints", 2, True, tmp_path)
    report = lifecycle.finish_run({"state": "SUCCEEDED"}, RUN_ID, f"{root}/finish-run/77/outcome",
                                  tmp_path / "a" / "outcome")
    assert report["removed"] == [f"{root}/checkpoints"] and not storage.list_files(f"{root}/checkpoints")
    given = f"{bucket}/checkpoints/my-dog"
    _checkpoint(given, 6, True, tmp_path / "a")
    _checkpoint(given, 8, False, tmp_path / "a")
    checkpoints.record_owner(f"{given}/0f3a9c1d2e4b5a6f", RUN_ID)  # as the run's training does (INKBOOTH_RUN_ID)
    report = lifecycle.finish_run({"state": "SUCCEEDED"}, RUN_ID, f"{root}/finish-run/77/outcome",
                                  tmp_path / "b" / "outcome", checkpoints=given)
    assert report["removed"] == [f"{given}/0f3a9c1d2e4b5a6f/step-00000008"]
    assert artifacts.is_published(f"{given}/0f3a9c1d2e4b5a6f/step-00000006"), "a prefix the user chose is kept"


def test_an_unreachable_kfp_api_still_gives_a_report(tmp_path):
    report = lifecycle.finish_run({"state": "FAILED"}, RUN_ID, str(tmp_path / "r" / "finish-run" / "outcome"),
                                  tmp_path / "outcome", kfp_api="http://127.0.0.1:9", clean_checkpoints=False)
    assert report["state"] == "FAILED" and "cannot ask http://127.0.0.1:9" in report["failed_tasks_error"]


def test_a_failed_local_run_still_runs_its_exit_task(tmp_path):
    (tmp_path / "documents").mkdir()
    # A hub id that is neither reachable (tests are offline) nor cached: the first step fails.
    run = runs.OCRRun(model="inkbooth-tests/not-cached", documents=str(tmp_path / "documents"),
                      output=str(tmp_path / "out"))
    with pytest.raises(RuntimeError):
        runs.run_local("ocr", run, tmp_path / "root")
    (outcome,) = (tmp_path / "root").glob("inkbooth-ocr-*/finish-run/outcome")
    assert json.loads(outcome.read_text())["state"] == "FAILED"


def test_the_exit_task_asks_with_the_pipelines_token_where_one_is_mounted(tmp_path, monkeypatch):
    """Multi-user KFP answers only with a token of the pipelines audience (the profile's PodDefault
    mounts it; the kfp client does not look for it once it is given a host)."""
    token = tmp_path / "token"
    token.write_text("projected-sa-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    with KFPStandIn() as api:
        api.runs[RUN_ID] = _failed_run()
        assert lifecycle.failed_tasks(api.url, RUN_ID)[0]["task"] == "fine-tune"
        (asked,) = [r for r in api.requests if RUN_ID in r["path"]]
    auth = asked["headers"].get("authorization") or asked["headers"].get("Authorization")
    assert auth == "Bearer projected-sa-token"


class PodKilled(BaseException):
    """A kill while publishing: nothing of the publish's own clean-up runs."""


def test_the_exit_task_leaves_another_runs_checkpoint_in_flight_alone(bucket, tmp_path, monkeypatch):
    """Two pipeline runs share a checkpoints: prefix. While the other run uploads a checkpoint (its
    files stored, its manifest not yet), this run's exit task runs. Was: it deleted that checkpoint as
    torn, the other run's publish still returned, and its resume started two steps back. Now the
    exit task removes only torn checkpoints its own run wrote (under a run key it recorded as its own,
    no newer publish of another run in them), and reports what it left."""
    shared = f"{bucket}/checkpoints/my-dog"
    identity = {"trainer": "t", "base_model": "b" * 64, "instance_images": "1" * 64, "config": "c" * 64}
    waiting: dict[str, threading.Event] = {}
    go_on = threading.Event()
    real_write = storage.write_text

    def pointer(run, step):
        return storage.join(run.uri, checkpoints.step_name(step), artifacts.MANIFEST)

    def stalls_or_dies(uri, text, **kw):
        if uri in waiting:  # another run's publish: every file stored, the pointer not yet written
            waiting[uri].set()
            assert go_on.wait(60)
        elif uri in dying:
            raise PodKilled
        return real_write(uri, text, **kw)

    dying: set[str] = set()
    monkeypatch.setattr(storage, "write_text", stalls_or_dies)

    def in_flight(run, step):
        waiting[pointer(run, step)] = threading.Event()
        folder = tmp_path / f"{run.key}-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(f"{run.key} at {step}".encode() * 50)
        thread = threading.Thread(target=run.save, args=(folder, step))
        thread.start()
        assert waiting[pointer(run, step)].wait(60)
        return thread

    def saved(run, step):
        folder = tmp_path / f"{run.key}-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(f"{run.key} at {step}".encode() * 50)
        run.save(folder, step)

    # The other pipeline run: its own training (another subject image set), and a second one with the
    # same identity as ours (so the same run key), both publishing a checkpoint right now.
    monkeypatch.setenv("INKBOOTH_RUN_ID", OTHER_RUN)
    theirs = checkpoints.RunCheckpoints(shared, {**identity, "instance_images": "2" * 64})
    twin = checkpoints.RunCheckpoints(shared, identity)
    saved(theirs, 2)
    threads = [in_flight(theirs, 4), in_flight(twin, 6)]
    # This run: step 2 published, step 4 torn (its pod was killed while publishing it).
    monkeypatch.setenv("INKBOOTH_RUN_ID", RUN_ID)
    ours = checkpoints.RunCheckpoints(shared, identity)
    assert ours.key == twin.key
    saved(ours, 2)
    dying.add(pointer(ours, 4))
    with pytest.raises(PodKilled):
        saved(ours, 4)
    root = f"{bucket}/v2/artifacts/inkbooth-dreambooth/{RUN_ID}"
    try:
        report = lifecycle.finish_run({"state": "FAILED"}, RUN_ID, f"{root}/finish-run/77/outcome",
                                      tmp_path / "outcome", checkpoints=shared)
    finally:
        go_on.set()
        for t in threads:
            t.join(60)
    assert report["removed"] == [storage.join(ours.uri, "step-00000004")], "only this run's torn checkpoint"
    assert not [f for f in storage.list_files(ours.uri) if f.startswith("step-00000004/")]
    left = {item["checkpoint"]: item["reason"] for item in report["left"]}
    assert "another run" in left[storage.join(theirs.uri, "step-00000004")]
    assert "another run" in left[storage.join(twin.uri, "step-00000006")]
    # The other run's checkpoints are whole: it resumes from the one it was writing.
    assert theirs.resume("latest").step == 4
    assert twin.resume("latest").step == 6 and [c.step for c in theirs.list()] == [2, 4]


def test_the_training_components_record_their_run_as_the_checkpoints_writer():
    """A shared checkpoints prefix: the exit task removes only what its run recorded, so the training
    steps must say which run they are (their child processes inherit it)."""
    import ast

    from tests.conftest import REPO

    for name in ("db_train", "ocr_finetune"):
        tree = ast.parse((REPO / "components" / name / "component.py").read_text())
        calls = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call)]
        assert "own_checkpoints(run_id)" in calls, name
