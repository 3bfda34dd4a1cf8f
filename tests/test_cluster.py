"""What the compiled pipelines ask of a cluster: resources, GPUs, placement, volumes, secrets, timeouts,
retries, caching, the exit task and the run-wide TTL and deadline."""

from __future__ import annotations

import dataclasses
import os

import pytest
import yaml

from inkbooth import cli, cluster, runs, storage
from inkbooth.config import ConfigError, from_dict
from tests.conftest import REPO

EXAMPLES = sorted((REPO / "examples").glob("cluster-*.yaml"))
# ClusterConfig stage -> (pipeline, task name in the IR)
TASKS = {
    "pin_model": ("ocr", "pin-model"), "export_trocr": ("ocr", "export-trocr"), "plan_ocr": ("ocr", "plan-ocr"),
    "recognize": ("ocr", "recognize-shard"), "merge_ocr": ("ocr", "merge-ocr"),
    "plan_prior": ("dreambooth", "plan-prior"), "prior": ("dreambooth", "generate-prior"),
    "train": ("dreambooth", "train"), "export_model": ("dreambooth", "export-model"),
    "sample": ("dreambooth", "sample-model"), "finish_run": ("dreambooth", "finish-run"),
    "prepare_lines": ("ocr-train", "prepare-lines"), "finetune_trocr": ("ocr-train", "finetune"),
    "evaluate_ocr": ("ocr-train", "evaluate"), "register_ocr": ("ocr-train", "register"),
}


def parse(path) -> tuple[dict, dict]:
    ir, platform = yaml.safe_load_all(path.read_text())
    return ir, platform["platforms"]["kubernetes"]


def compiled(name: str, tmp_path, settings=None) -> tuple[dict, dict]:
    ir, platform = parse(runs.compile_pipeline(name, tmp_path / f"{name}.yaml", settings))
    return ir, platform["deploymentSpec"]["executors"]


def resources(ir: dict, executor: str) -> dict:
    return ir["deploymentSpec"]["executors"][executor]["container"].get("resources", {})


def all_tasks(ir: dict) -> dict[str, dict]:
    """Task name -> task spec, wherever it sits in the DAG."""
    found = dict(ir["root"]["dag"]["tasks"])
    for comp in ir["components"].values():
        found.update(comp.get("dag", {}).get("tasks", {}))
    return found


def stage_settings(ir: dict, k8s: dict, task: str) -> dict:
    """What the IR says about one task, in ClusterConfig's terms."""
    spec = all_tasks(ir)[task]
    executor = f"exec-{task}"
    res = resources(ir, executor)
    mounts = {m["mountPath"]: m for m in k8s[executor].get("emptyDirMounts", [])}
    return {
        "cpu": res.get("resourceCpuRequest"), "memory": res.get("resourceMemoryRequest"),
        "memory_limit": res.get("resourceMemoryLimit", ""),
        "gpus": int(res.get("accelerator", {}).get("resourceCount", 0)),
        "node_selector": k8s[executor].get("nodeSelector", {}).get("labels", {}),
        "shm": mounts.get("/dev/shm", {}).get("sizeLimit", ""), "scratch": mounts["/tmp"].get("sizeLimit", ""),
        "timeout": int(k8s[executor].get("activeDeadlineSeconds", 0)),
        "retries": spec.get("retryPolicy", {}).get("maxRetryCount", 0),
        "caching": spec.get("cachingOptions", {}).get("enableCache", False),
        "do_not_disrupt": k8s[executor].get("podMetadata", {}).get("annotations", {}).get(cluster.DO_NOT_DISRUPT)
        == "true",
    }


def expected(stage: cluster.StageResources) -> dict:
    return {"cpu": stage.cpu, "memory": stage.memory, "memory_limit": stage.memory_limit or
            (stage.memory if stage.gpus else ""), "gpus": stage.gpus, "node_selector": stage.node_selector,
            "shm": stage.shm, "scratch": stage.scratch, "timeout": stage.timeout, "retries": stage.retries,
            "caching": stage.caching, "do_not_disrupt": stage.do_not_disrupt}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_cluster_files_override_only_what_they_set(path, tmp_path, capsys):
    """`inkbooth compile all --cluster FILE --out-dir DIR` (DIR absent): every stage keeps the defaults it did not override."""
    out = tmp_path / "absent" / path.stem
    assert cli.main(["compile", "all", "--cluster", str(path), "--out-dir", str(out)]) == 0
    given = yaml.safe_load(path.read_text())
    defaults = cluster.ClusterConfig()
    irs = {name: parse(out / runs.get(name).yaml) for name in runs.PIPELINES}

    def settings_of(stage: str) -> dict:
        pipeline, task = TASKS[stage]
        ir, platform = irs[pipeline]
        return stage_settings(ir, platform["deploymentSpec"]["executors"], task)

    for stage in TASKS:
        overrides = {k: v for k, v in given.get(stage, {}).items() if k != "tolerations"}
        assert settings_of(stage) == expected(dataclasses.replace(defaults.stage(stage), **overrides)), stage
    train, prior = settings_of("train"), settings_of("prior")
    assert train["caching"] is False and prior["caching"] is False, "training and class images never cache"
    assert prior["memory"] == "16Gi" and train["retries"] >= 2


def test_a_stage_given_in_part_keeps_the_rest_of_its_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {gpus: 4}\nsample: {node_selector: {pool: l4}}\n")
    settings = cluster.load(str(path))
    assert settings.train.gpus == 4
    assert (settings.train.memory, settings.train.shm, settings.train.retries, settings.train.caching) == \
        ("32Gi", "8Gi", 2, False)
    assert settings.sample.memory == "16Gi" and settings.sample.caching is False and settings.sample.gpus == 1
    assert settings.prior == cluster.ClusterConfig().prior


def test_default_settings_in_the_dreambooth_ir(tmp_path):
    ir, k8s = compiled("dreambooth", tmp_path)
    train = resources(ir, "exec-train")
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu" and train["accelerator"]["resourceCount"] == "1"
    assert train["resourceMemoryRequest"] == "32Gi" and train["resourceMemoryLimit"] == "32Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["exec-train"]["tolerations"]
    shm = [m for m in k8s["exec-train"]["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi", "volumeName": "dshm"}]
    for executor in ("exec-generate-prior", "exec-sample-model", "exec-train"):
        assert "accelerator" in resources(ir, executor), executor
    assert "accelerator" not in resources(ir, "exec-export-model")
    for executor, spec in k8s.items():
        envs = {kv["envVar"] for s in spec["secretAsEnv"] for kv in s["keyToEnv"]}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"} <= envs, executor
        # Inside a ParallelFor the parameter arrives renamed ("pipelinechannel--s3_secret").
        assert all(s["secretNameParameter"]["componentInputParameter"].endswith("s3_secret") for s in spec["secretAsEnv"])
        tmp = [m for m in spec["emptyDirMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and tmp[0]["sizeLimit"].endswith("Gi"), "read-only root needs a sized /tmp"
        assert spec["securityContext"] == {"runAsUser": str(cluster.IMAGE_UID), "runAsGroup": str(cluster.IMAGE_UID),
                                           "runAsNonRoot": True}, executor
        assert int(spec["activeDeadlineSeconds"]) > 0, f"{executor}: every stage has a timeout"
    assert k8s["exec-train"]["podMetadata"]["annotations"] == {cluster.DO_NOT_DISRUPT: "true"}
    assert "podMetadata" not in k8s["exec-generate-prior"], "only training pods hold the node"
    assert [m["sizeLimit"] for m in k8s["exec-train"]["emptyDirMounts"] if m["mountPath"] == "/tmp"] == ["100Gi"]
    tasks = all_tasks(ir)
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["train"].get("cachingOptions", {}).get("enableCache") in (None, False), "training: no cache"
    assert tasks["sample-model"].get("cachingOptions", {}).get("enableCache") in (None, False), "pointer input"
    assert ir["root"]["inputDefinitions"]["parameters"]["s3_secret"]["defaultValue"] == "inkbooth-s3"


def test_ocr_stages_cache_only_on_content(tmp_path):
    ir, k8s = compiled("ocr", tmp_path)
    tasks = all_tasks(ir)
    export = tasks["export-trocr"]
    assert export["cachingOptions"]["enableCache"] is True
    # The export's cache key holds the model's fingerprint, made by a step that never caches.
    assert export["inputs"]["parameters"]["model_key"]["taskOutputParameter"] == {
        "outputParameterKey": "key", "producerTask": "pin-model"}
    assert tasks["pin-model"].get("cachingOptions", {}).get("enableCache") in (None, False)
    for task in ("plan-ocr", "recognize-shard", "merge-ocr"):
        assert tasks[task].get("cachingOptions", {}).get("enableCache") in (None, False), task
    assert tasks["recognize-shard"]["retryPolicy"]["maxRetryCount"] == 3
    assert "accelerator" not in resources(ir, "exec-recognize-shard"), "CPU INT8 by default"
    assert "tolerations" not in k8s["exec-recognize-shard"]


@pytest.mark.parametrize("stage", ["train", "prior", "export_model", "recognize", "merge_ocr", "pin_model",
                                   "plan_ocr", "finish_run"])
def test_stages_whose_output_is_not_a_function_of_their_key_refuse_caching(stage):
    with pytest.raises(ConfigError, match=f"{stage}.caching: this stage may not cache"):
        from_dict(cluster.ClusterConfig, {stage: {"caching": True}})


def test_loops_are_bounded(tmp_path):
    for name, stage in (("ocr", "recognize"), ("dreambooth", "prior")):
        ir, _ = compiled(name, tmp_path)
        limits = [t["iteratorPolicy"]["parallelismLimit"] for t in all_tasks(ir).values() if "iteratorPolicy" in t]
        assert limits == [getattr(cluster.ClusterConfig(), stage).parallelism] and limits[0] >= 1
    settings = from_dict(cluster.ClusterConfig, {"recognize": {"parallelism": 32}})
    ir, _ = compiled("ocr", tmp_path, settings)
    assert [t["iteratorPolicy"]["parallelismLimit"] for t in all_tasks(ir).values() if "iteratorPolicy" in t] == [32]
    with pytest.raises(ConfigError, match="recognize.parallelism must be at least 1"):
        from_dict(cluster.ClusterConfig, {"recognize": {"parallelism": 0}})
    with pytest.raises(ConfigError, match="train.parallelism: only"):
        from_dict(cluster.ClusterConfig, {"train": {"parallelism": 2}})


@pytest.mark.parametrize("name", sorted(runs.PIPELINES))
def test_every_task_runs_inside_an_exit_handler(name, tmp_path):
    ir, _ = compiled(name, tmp_path)
    root = ir["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "finish-run"}
    finish = root["finish-run"]
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert finish["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert finish["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert finish["inputs"]["parameters"]["kfp_api"] == {"componentInputParameter": "kfp_api"}
    assert ir["root"]["inputDefinitions"]["parameters"]["kfp_api"]["defaultValue"].startswith("http://ml-pipeline.")


def test_run_ttl_and_deadline(tmp_path):
    _, platform = parse(runs.compile_pipeline("ocr", tmp_path / "a.yaml"))
    # After success and failure too: KFP 2.17's stock Argo defaults set those to an hour, and they win.
    ttl = 3 * 86400
    assert platform["pipelineConfig"] == {"activeDeadlineSeconds": 2 * 86400, "resourceTtlOnCompletion": ttl,
                                          "resourceTtlOnSuccess": ttl, "resourceTtlOnFailure": ttl}
    settings = from_dict(cluster.ClusterConfig, {"ttl_seconds": 3600, "deadline_seconds": 0})
    _, platform = parse(runs.compile_pipeline("dreambooth", tmp_path / "b.yaml", settings))
    assert platform["pipelineConfig"] == {"resourceTtlOnCompletion": 3600, "resourceTtlOnSuccess": 3600,
                                          "resourceTtlOnFailure": 3600}


def test_training_resumes_into_the_run_root(tmp_path):
    ir, _ = compiled("dreambooth", tmp_path)
    train = all_tasks(ir)["train"]["inputs"]["parameters"]
    assert train["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert train["checkpoints"]["componentInputParameter"].endswith("checkpoints")


def test_the_pdf_password_comes_from_an_optional_secret(tmp_path):
    ir, k8s = compiled("ocr", tmp_path)
    pdf = [s for s in k8s["exec-recognize-shard"]["secretAsEnv"]
           if s["keyToEnv"] == [{"secretKey": "pdf_password", "envVar": cluster.PDF_PASSWORD_ENV}]]
    assert len(pdf) == 1 and pdf[0]["optional"] is True
    assert pdf[0]["secretNameParameter"]["componentInputParameter"].endswith("pdf_secret")
    for executor, spec in k8s.items():
        if executor != "exec-recognize-shard":
            assert "pdf_password" not in yaml.safe_dump(spec), executor
    assert ir["root"]["inputDefinitions"]["parameters"]["pdf_secret"]["defaultValue"] == "inkbooth-pdf"


def test_keyless_credentials_put_no_keys_in_any_pod(tmp_path):
    settings = from_dict(cluster.ClusterConfig, {"credentials": "workload-identity", "service_account": "runner"})
    for name in runs.PIPELINES:
        _, k8s = compiled(name, tmp_path, settings)
        for executor, spec in k8s.items():
            envs = {kv["envVar"] for s in spec.get("secretAsEnv", []) for kv in s["keyToEnv"]}
            assert not envs & set(cluster.S3_KEYS + cluster.S3_OPTIONAL), executor


def test_the_cluster_file_names_the_backend_and_the_compile_follows_it(tmp_path):
    settings = from_dict(cluster.ClusterConfig, {"kfp": {"backend": "2.16"}})
    settings.validate()
    assert not settings.honours("pipeline_config") and settings.honours("security_context")
    assert settings.pipeline_config() is None
    with pytest.raises(ValueError, match="kfp.backend: KFP backend 2.3: older than 2.5"):
        from_dict(cluster.ClusterConfig, {"kfp": {"backend": "2.3"}}).validate()
    assert cli.main(["compile", "ocr", "--backend", "2.15", "--out-dir", str(tmp_path)]) == 0
    _, k8s = compiled("ocr", tmp_path, settings.for_backend("2.15"))
    assert not any("securityContext" in e for e in k8s.values())


def test_no_credentials_end_up_in_compiled_pipelines(tmp_path, monkeypatch):
    planted = "PLANTED-SECRET-9f3a1c"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", planted)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", planted + "-id")
    monkeypatch.setenv(cluster.PDF_PASSWORD_ENV, planted + "-pdf")
    for name in runs.PIPELINES:
        assert planted not in runs.compile_pipeline(name, tmp_path / f"{name}.yaml").read_text()
    assert planted not in "".join(p.read_text() for p in (REPO / "pipelines").glob("*.yaml"))
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == planted


def test_cluster_config_is_strict():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(cluster.ClusterConfig, {"training": {"gpus": 1}})
    with pytest.raises(ConfigError, match="expected one of"):
        from_dict(cluster.ClusterConfig, {"train": {"tolerations": [{"operator": "Maybe"}]}})
    with pytest.raises(ConfigError, match="expected one of"):
        from_dict(cluster.ClusterConfig, {"credentials": "static"})


def test_the_model_fingerprint_follows_content_not_names(bucket, tmp_path, monkeypatch):
    from inkbooth import models

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights-1")
    storage.upload_dir(folder, f"{bucket}/ckpt")
    first = models.fingerprint(f"{bucket}/ckpt")
    assert first == models.fingerprint(f"{bucket}/ckpt") == models.fingerprint(str(folder)), "same bytes, same key"
    storage.write_bytes(f"{bucket}/ckpt/model.safetensors", b"weights-2")  # retrained behind the same prefix
    assert models.fingerprint(f"{bucket}/ckpt") != first
    with pytest.raises(models.ModelSourceError, match="changed since the run pinned it"):
        models.require_fingerprint(f"{bucket}/ckpt", first)
    # Copied up by another tool (no recorded SHA-256), then replaced by bytes of the same size.
    raw = storage.parse(f"{bucket}/raw/model.safetensors")
    storage.s3_client().put_object(Bucket=raw.bucket, Key=raw.key, Body=b"weights-A")
    before = models.fingerprint(f"{bucket}/raw")
    storage.s3_client().put_object(Bucket=raw.bucket, Key=raw.key, Body=b"weights-B")
    assert models.fingerprint(f"{bucket}/raw") != before
    # A hub id pins to the commit its revision points at; offline, from the local cache.
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--trocr" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--acme--trocr" / "refs").mkdir()
    (cache / "models--acme--trocr" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert models.fingerprint("acme/trocr") == f"hub:acme/trocr@{'a' * 40}"
    with pytest.raises(models.ModelSourceError, match="cannot pin the hub revision"):
        models.fingerprint("acme/not-cached")


def test_a_stage_can_run_in_another_image_variant(tmp_path):
    """recognize on GPUs runs in ocr-cuda (onnxruntime-gpu); by digest when the cluster file pins it."""
    gpu = {"recognize": {"image": "ocr-cuda", "gpus": 1}}
    ir, _ = compiled("ocr", tmp_path, from_dict(cluster.ClusterConfig, gpu))
    images = {name: e["container"]["image"] for name, e in ir["deploymentSpec"]["executors"].items()}
    version = __import__("inkbooth").__version__
    assert images["exec-recognize-shard"] == f"ghcr.io/inkbooth/inkbooth-ocr-cuda:{version}"
    assert images["exec-merge-ocr"] == f"ghcr.io/inkbooth/inkbooth-ocr-cpu:{version}", "only that stage"
    assert resources(ir, "exec-recognize-shard")["accelerator"]["resourceCount"] == "1"
    digest = "sha256:" + "c" * 64
    pinned = from_dict(cluster.ClusterConfig, {**gpu, "images": {"ocr-cuda": digest}})
    ir, _ = compiled("ocr", tmp_path, pinned)
    assert ir["deploymentSpec"]["executors"]["exec-recognize-shard"]["container"]["image"] == (
        f"ghcr.io/inkbooth/inkbooth-ocr-cuda@{digest}")
    with pytest.raises(ValueError, match="recognize.image: unknown image variant 'ocr-gpu'"):
        from_dict(cluster.ClusterConfig, {"recognize": {"image": "ocr-gpu"}}).validate()


def test_images_can_be_named_by_digest(tmp_path):
    digest = "sha256:" + "ab" * 32
    settings = from_dict(cluster.ClusterConfig, {"images": {"train-cuda": digest}})
    ir, _ = compiled("dreambooth", tmp_path, settings)
    images = {name: e["container"]["image"] for name, e in ir["deploymentSpec"]["executors"].items()
              if "container" in e}  # importers have no image
    assert images["exec-train"] == images["exec-sample-model"] == f"ghcr.io/inkbooth/inkbooth-train-cuda@{digest}"
    assert images["exec-finish-run"].endswith("inkbooth-ocr-cpu:" + __import__("inkbooth").__version__)
    other = from_dict(cluster.ClusterConfig, {"images": {"ocr-cpu": f"registry.example.com/ml/inkbooth-ocr-cpu@{digest}"}})
    ir, _ = compiled("ocr", tmp_path, other)
    assert {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values() if "container" in e} == {
        f"registry.example.com/ml/inkbooth-ocr-cpu@{digest}"}
    for bad, message in (({"train-cuda": "0.1.0"}, "is not a digest"), ({"gpu": digest}, "unknown variant"),
                         ({"ocr-cpu": f"ghcr.io/x/inkbooth-train-cuda@{digest}"}, "names another image")):
        with pytest.raises(ConfigError, match=message):
            from_dict(cluster.ClusterConfig, {"images": bad})
