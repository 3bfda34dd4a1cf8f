"""submit, schedule and the retrain trigger against a local stand-in of the KFP API."""

from __future__ import annotations

import json
import re

import pytest

from inkbooth import artifacts, cli, runs, storage, submit
from tests.conftest import REPO
from tests.kfpstandin import KFPStandIn


@pytest.fixture
def kfp_api():
    with KFPStandIn() as standin:
        yield standin


def ocr_run() -> runs.OCRRun:
    return runs.OCRRun(model="microsoft/trocr-base-printed", documents="s3://scans/in", output="s3://ocr/out",
                       num_shards=8, recognize={"num_beams": 2})


def test_submit_sends_the_compiled_pipeline_with_cluster_settings(kfp_api, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "PLANTED-SECRET-77c1")
    endpoint = submit.Endpoint(host=kfp_api.url, cluster=str(REPO / "examples" / "cluster-gke.yaml"),
                               s3_secret="team-s3", experiment="ocr-nightly")
    run_id = submit.submit("ocr", ocr_run(), endpoint, run_name="scan-batch")
    (body,) = kfp_api.posted("/runs")
    assert run_id in kfp_api.runs and body["display_name"] == "scan-batch"
    assert kfp_api.runs[run_id].experiment_id == body["experiment_id"], "the run is in the experiment it named"
    params = body["runtime_config"]["parameters"]
    assert params["model"] == "microsoft/trocr-base-printed" and params["num_shards"] == 8
    assert params["recognize_config"] == {"num_beams": 2} and params["s3_secret"] == "team-s3"
    spec = json.dumps(body["pipeline_spec"])
    assert "cloud.google.com/gke-spot" in spec, "the cluster config's node selector travels in the platform spec"
    assert "ghcr.io/inkbooth/inkbooth-ocr-cpu" in spec
    assert [b["display_name"] for b in kfp_api.posted("/experiments")] == ["ocr-nightly"]
    everything = json.dumps([r["body"] for r in kfp_api.requests]) + json.dumps([r["headers"] for r in kfp_api.requests])
    assert "PLANTED-SECRET-77c1" not in everything, "credentials never travel with a run"


def test_local_paths_are_refused_for_cluster_runs(kfp_api, tmp_path):
    run = runs.OCRRun(model="microsoft/trocr-base-printed", documents=str(tmp_path), output="s3://ocr/out")
    with pytest.raises(ValueError, match="documents = .* is a local path"):
        submit.submit("ocr", run, submit.Endpoint(host=kfp_api.url))
    assert not kfp_api.posted("/runs")


def test_schedule_creates_a_recurring_run_in_one_experiment(kfp_api):
    endpoint = submit.Endpoint(host=kfp_api.url, experiment="nightly")
    submit.schedule("ocr", ocr_run(), endpoint, job_name="ocr-03h", cron="0 0 3 * * *")
    submit.schedule("ocr", ocr_run(), endpoint, job_name="ocr-15h", cron="0 0 15 * * *", max_concurrency=2)
    first, second = kfp_api.posted("/recurringruns")
    assert first["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *" and first["display_name"] == "ocr-03h"
    assert second["max_concurrency"] in (2, "2") and first["no_catchup"] is True
    assert first["experiment_id"] == second["experiment_id"]
    assert len(kfp_api.posted("/experiments")) == 1, "the experiment is created once, then found"
    with pytest.raises(ValueError, match="cron"):
        submit.schedule("ocr", ocr_run(), endpoint, job_name="bad", cron="daily")


def test_retrain_trigger_submits_only_when_subject_images_change(kfp_api, bucket, subject_dir, tmp_path):
    from inkbooth.dreambooth.train import image_set_hash, load_images

    storage.upload_dir(subject_dir, f"{bucket}/subjects/dog")
    run = runs.DreamBoothRun(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
                             instance_images=f"{bucket}/subjects/dog", prior_output=f"{bucket}/priors",
                             registry=f"{bucket}/registry", export={"name": "dog"})
    endpoint = submit.Endpoint(host=kfp_api.url)
    first = submit.retrain_if_changed(run, endpoint)
    assert first["submitted"] and "no version of dog yet" in first["reason"]
    assert first["hash"] == load_images(f"{bucket}/subjects/dog", "subject")[1], "the same hash training records"
    # A version trained on exactly these images:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "weights.bin").write_bytes(b"w")
    artifacts.Registry(f"{bucket}/registry").register(
        "dog", tmp_path / "v", kind="dreambooth-export", lineage={
            "instance_images_hash": first["hash"], "selected_step": 600,
            "selection": "select: best; step 600 has the highest 1*dino = 0.6800 among 4 of 4 steps"})
    same = submit.retrain_if_changed(run, endpoint)
    assert not same["submitted"] and "unchanged since dog v1" in same["reason"]
    # The trigger says which step the latest version is and why it was chosen.
    assert same["latest"] == {"version": "v1", "selected_step": 600,
                              "selection": "select: best; step 600 has the highest 1*dino = 0.6800 among 4 of 4 steps"}
    assert len(kfp_api.posted("/runs")) == 1
    storage.write_bytes(f"{bucket}/subjects/dog/new.png", (subject_dir / "subject-00.png").read_bytes()[::-1])
    changed = submit.retrain_if_changed(run, endpoint)
    assert changed["submitted"] and changed["hash"] == image_set_hash(f"{bucket}/subjects/dog") != first["hash"]
    assert len(kfp_api.posted("/runs")) == 2
    assert kfp_api.posted("/runs")[-1]["display_name"].startswith("retrain-dog-")


def test_submit_command(kfp_api, tmp_path, capsys, monkeypatch):
    run_file = tmp_path / "run.yaml"
    run_file.write_text("model: microsoft/trocr-base-printed\ndocuments: s3://a/b\noutput: s3://c/d\n")
    monkeypatch.setenv("INKBOOTH_KFP_TOKEN", "token-from-env")
    assert cli.main(["submit", "ocr", "--run", str(run_file), "--host", kfp_api.url, "--set", "num_shards=3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"] in kfp_api.runs
    assert kfp_api.posted("/runs")[0]["runtime_config"]["parameters"]["num_shards"] == 3
    auth = [r["headers"].get("authorization") or r["headers"].get("Authorization") for r in kfp_api.requests]
    assert "Bearer token-from-env" in auth


@pytest.mark.parametrize("version", ["2.4.0", "1.8.5"])
def test_a_backend_older_than_any_contract_is_refused_before_anything_is_sent(version):
    with KFPStandIn(version=version) as api:
        with pytest.raises(submit.BackendTooOldError, match=rf"KFP backend {version}: older than 2.5"):
            submit.submit("ocr", ocr_run(), submit.Endpoint(host=api.url))
        with pytest.raises(submit.BackendTooOldError, match="older than 2.5"):
            submit.schedule("ocr", ocr_run(), submit.Endpoint(host=api.url), job_name="n", cron="0 0 3 * * *")
        assert not api.posted("/runs") and not api.posted("/recurringruns") and not api.posted("/experiments")


def _platform(posted: dict) -> dict:
    """The Kubernetes platform spec of a posted run (what the server would parse)."""
    return posted.get("platform_spec") or posted["pipeline_spec"].get("platform_spec") or {}


@pytest.mark.parametrize("version, has_config, has_security", [
    ("2.17.0", True, True), ("2.16.1", False, True), ("2.15.2", False, False), ("2.5.0", False, False)])
def test_a_run_is_compiled_for_the_backend_the_server_reports(version, has_config, has_security, caplog):
    with KFPStandIn(version=version) as api:
        submit.submit("ocr", ocr_run(), submit.Endpoint(host=api.url))
        (posted,) = api.posted("/runs")
    k8s = _platform(posted)["platforms"]["kubernetes"]
    assert ("pipelineConfig" in k8s) == has_config
    executors = k8s["deploymentSpec"]["executors"].values()
    assert all(("securityContext" in e) == has_security for e in executors)
    if version != "2.17.0":
        assert f"runs KFP {version}: compiling for" in caplog.text and "left out:" in caplog.text


def test_an_unknown_backend_version_is_warned_about(caplog):
    with KFPStandIn(version="unknown") as api:
        submit.submit("ocr", ocr_run(), submit.Endpoint(host=api.url))
        assert len(api.posted("/runs")) == 1
    assert "KFP backend version 'unknown' unknown; compiling for 2.17" in caplog.text


def test_submit_command_says_the_backend_is_too_old(tmp_path, capsys):
    run_file = tmp_path / "run.yaml"
    run_file.write_text("model: microsoft/trocr-base-printed\ndocuments: s3://a/b\noutput: s3://c/d\n")
    with KFPStandIn(version="2.2.0") as api:
        assert cli.main(["submit", "ocr", "--run", str(run_file), "--host", api.url]) == 1
    assert "KFP backend 2.2.0: older than 2.5, the oldest inkbooth compiles for" in capsys.readouterr().err


def test_keyless_runs_need_and_use_a_service_account(tmp_path):
    keyless = tmp_path / "eks.yaml"
    keyless.write_text("credentials: workload-identity\n")
    with KFPStandIn() as api:
        with pytest.raises(ValueError, match="workload-identity needs the run's service account"):
            submit.submit("ocr", ocr_run(), submit.Endpoint(host=api.url, cluster=str(keyless)))
        submit.submit("ocr", ocr_run(), submit.Endpoint(host=api.url, cluster=str(keyless),
                                                        service_account="inkbooth-runner"))
        (body,) = api.posted("/runs")
    assert body["service_account"] == "inkbooth-runner"
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(body["pipeline_spec"]), "no key reaches any pod"
    eks = cluster_file("eks")
    with KFPStandIn() as api:
        submit.submit("ocr", ocr_run(), submit.Endpoint(host=api.url, cluster=eks))
        assert api.posted("/runs")[0]["service_account"] == "inkbooth-runner", "the EKS example is keyless"


def cluster_file(cloud: str) -> str:
    return str(REPO / "examples" / f"cluster-{cloud}.yaml")


def test_retrain_refuses_a_run_that_makes_its_lines_from_pdfs():
    """Its trained-on hash is the pdf-lines output's, which the PDFs alone cannot give: retraining on
    every call would be wrong, so it says to schedule the run instead."""
    run = runs.OCRTrainRun(base_model="m", registry="s3://r/models", pdfs="s3://d/pdfs")
    with pytest.raises(ValueError, match="schedule it"):
        submit.retrain_if_changed(run, submit.Endpoint(host="http://127.0.0.1:9"))


def _call(api: KFPStandIn, method: str, path: str, body=None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(api.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_kfp_stand_in_refuses_what_the_api_refuses(kfp_api):
    """The stand-in the tests above submit to checks bodies against the API's schema (kfp-server-api)
    and the server's rules, so a request the real API would refuse fails here too."""
    from kfp_server_api import models

    status, exp = _call(kfp_api, "POST", "/apis/v2beta1/experiments", {"display_name": "e"})
    assert status == 200 and set(exp) <= set(models.V2beta1Experiment.attribute_map.values())
    spec = {"root": {"inputDefinitions": {"parameters": {"model": {"parameterType": "STRING"},
                                                         "shards": {"parameterType": "NUMBER_INTEGER",
                                                                    "defaultValue": 4}}}}}
    run = {"display_name": "r", "experiment_id": exp["experiment_id"], "pipeline_spec": spec,
           "runtime_config": {"parameters": {"model": "m"}}}
    status, created = _call(kfp_api, "POST", "/apis/v2beta1/runs", run)
    assert status == 200 and created["state"] == "PENDING" and created["run_id"] in kfp_api.runs
    status, got = _call(kfp_api, "GET", f"/apis/v2beta1/runs/{created['run_id']}")
    assert status == 200 and got == created
    refused = [
        ({**run, "runtime_config": {"parameters": {"model": "m", "shard": 3}}}, 400, "not inputs of the pipeline"),
        ({**run, "runtime_config": {"parameters": {}}}, 400, r"inputs \['model'\] have no default"),
        ({**run, "display_name": ""}, 400, "The run name is empty"),
        ({**run, "experiment_id": "ocr-nightly"}, 404, "experiment ocr-nightly not found"),
        ({**run, "pipeline_spec": None}, 400, "pipeline spec or a pipeline version reference"),
        ({**run, "runtime_config": {"parameter": {"model": "m"}}}, 400, "V2beta1RuntimeConfig has no field 'parameter'"),
        ({**run, "state": "DONE"}, 400, "'DONE' is not one of"),
        ({**run, "display_name": 7}, 400, "expected str"),
    ]
    for body, code, message in refused:
        status, answer = _call(kfp_api, "POST", "/apis/v2beta1/runs", body)
        assert status == code and re.search(message, answer["message"]), (body, answer)
        assert set(answer) == {"error", "code", "message", "details"}
    schedule = {"display_name": "s", "experiment_id": exp["experiment_id"], "pipeline_spec": spec,
                "runtime_config": {"parameters": {"model": "m"}}, "max_concurrency": "1", "mode": "ENABLE",
                "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}}}
    assert _call(kfp_api, "POST", "/apis/v2beta1/recurringruns", schedule)[0] == 200
    for body, message in (({**schedule, "max_concurrency": 11}, "Support 1-10. Received 11"),
                          ({**schedule, "trigger": {"cron_schedule": {"cron": "daily"}}}, "cron is not a supported"),
                          ({**schedule, "trigger": {}}, "needs a trigger")):
        status, answer = _call(kfp_api, "POST", "/apis/v2beta1/recurringruns", body)
        assert status == 400 and re.search(message, answer["message"]), (body, answer)
    status, answer = _call(kfp_api, "POST", "/apis/v2beta1/experiments", {"display_name": "e"})
    assert status == 409 and "already exists" in answer["message"]
    assert len(kfp_api.posted("/runs")) == 1 and len(kfp_api.posted("/recurringruns")) == 1, \
        "posted() lists what was accepted only"


def test_a_run_the_api_would_refuse_fails_the_submit(kfp_api, monkeypatch):
    """An argument the pipeline does not declare (a parameter renamed in the pipeline, say) is refused
    by the API: submit fails with its answer instead of reporting a run id."""
    real = submit._arguments
    monkeypatch.setattr(submit, "_arguments", lambda *a, **kw: {**real(*a, **kw), "num_shard": 8})
    with pytest.raises(Exception, match="not inputs of the pipeline"):
        submit.submit("ocr", ocr_run(), submit.Endpoint(host=kfp_api.url))
    assert not kfp_api.posted("/runs") and not kfp_api.runs
