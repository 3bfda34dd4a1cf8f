"""What the compiled pipelines ask of a cluster: resources, GPUs, placement, /dev/shm, secrets, retries, caching."""

from __future__ import annotations

import os

import pytest
import yaml

from inkbooth import cluster, runs
from inkbooth.config import ConfigError, from_dict
from tests.conftest import REPO


def compiled(name: str, tmp_path, settings=None) -> tuple[dict, dict]:
    path = runs.compile_pipeline(name, tmp_path / f"{name}.yaml", settings)
    ir, platform = yaml.safe_load_all(path.read_text())
    return ir, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def resources(ir: dict, executor: str) -> dict:
    return ir["deploymentSpec"]["executors"][executor]["container"].get("resources", {})


def task_options(ir: dict) -> dict[str, dict]:
    """Task name -> its retry policy and caching, wherever it sits in the DAG."""
    found = {}

    def walk(dag):
        for name, task in dag.get("tasks", {}).items():
            found[name] = {"retry": task.get("retryPolicy"), "cache": task.get("cachingOptions", {})}
    walk(ir["root"]["dag"])
    for comp in ir["components"].values():
        if "dag" in comp:
            walk(comp["dag"])
    return found


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
        assert {"mountPath": "/tmp", "volumeName": "tmp"} in spec["emptyDirMounts"], "read-only root needs /tmp"
    options = task_options(ir)
    assert options["train"]["retry"]["maxRetryCount"] == 2
    assert options["train"]["cache"].get("enableCache") in (None, False), "training is not deterministic: no cache"
    assert options["sample-model"]["cache"]["enableCache"] is True
    assert ir["root"]["inputDefinitions"]["parameters"]["s3_secret"]["defaultValue"] == "inkbooth-s3"


def test_ocr_stages_that_write_outside_artifacts_are_not_cached(tmp_path):
    ir, k8s = compiled("ocr", tmp_path)
    options = task_options(ir)
    assert options["export-trocr"]["cache"]["enableCache"] is True
    for task in ("plan-ocr", "recognize-shard", "merge-ocr"):
        assert options[task]["cache"].get("enableCache") in (None, False), task
    assert options["recognize-shard"]["retry"]["maxRetryCount"] == 3
    assert "accelerator" not in resources(ir, "exec-recognize-shard"), "CPU INT8 by default"
    assert "tolerations" not in k8s["exec-recognize-shard"]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("cluster-*.yaml")), ids=lambda p: p.stem)
def test_cloud_cluster_configs_reach_the_ir(path, tmp_path):
    settings = cluster.load(str(path))
    ir, k8s = compiled("dreambooth", tmp_path, settings)
    for stage, executor in (("train", "exec-train"), ("prior", "exec-generate-prior"), ("sample", "exec-sample-model")):
        wanted = settings.stage(stage)
        selector = k8s[executor].get("nodeSelector", {}).get("labels", {})
        assert selector == wanted.node_selector, (stage, selector)
        tolerations = k8s[executor]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations), "GPU stages always tolerate the GPU taint"
        for t in wanted.tolerations:
            assert {k: v for k, v in t.__dict__.items() if v} in [{k: v for k, v in x.items() if v} for x in tolerations]
    shm = [m for m in k8s["exec-train"]["emptyDirMounts"] if m["mountPath"] == "/dev/shm"][0]
    assert shm["sizeLimit"] == settings.train.shm


def test_no_credentials_end_up_in_compiled_pipelines(tmp_path, monkeypatch):
    planted = "PLANTED-SECRET-9f3a1c"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", planted)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", planted + "-id")
    for name in runs.PIPELINES:
        assert planted not in runs.compile_pipeline(name, tmp_path / f"{name}.yaml").read_text()
    assert planted not in "".join(p.read_text() for p in (REPO / "pipelines").glob("*.yaml"))
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == planted


def test_cluster_config_is_strict():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(cluster.ClusterConfig, {"training": {"gpus": 1}})
    with pytest.raises(ConfigError, match="expected one of"):
        from_dict(cluster.ClusterConfig, {"train": {"tolerations": [{"operator": "Maybe"}]}})
