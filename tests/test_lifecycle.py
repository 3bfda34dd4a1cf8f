"""A run's own state (the run root, where retried training pods resume) and its exit task."""

from __future__ import annotations

import json
import logging

import pytest

from inkbooth import artifacts, checkpoints, lifecycle, lineage, runs, storage
from tests.kfpstandin import KFPStandIn

RUN_ID = "5b2f6c9e-0d1a-4c3b-9e7f-1a2b3c4d5e6f"


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


def _failed_run() -> dict:
    def task(name, state, error="", children=()):
        return {"task_id": name, "display_name": name, "state": state, "error": {"message": error} if error else None,
                "child_tasks": [{"task_id": c} for c in children]}

    return {"run_id": RUN_ID, "display_name": "dog", "state": "FAILED", "run_details": {"task_details": [
        task("root", "FAILED", children=["exit-handler-1"]),
        task("exit-handler-1", "FAILED", children=["fine-tune", "class-images"]),
        task("class-images", "SUCCEEDED"),
        task("fine-tune", "FAILED", "OOMKilled: container exceeded its memory limit"),
        task("finish-run", "RUNNING"),
    ]}}


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
