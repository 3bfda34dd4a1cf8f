"""The backend contract: every pipeline, compiled with every example cluster file for every supported
KFP backend, holds only what that backend's API server and Argo compiler parse.

The field sets are the backends' own protos (tests/data/kfp_platform_schema.json, written by
scripts/kfp-platform-schema.py from kubeflow/pipelines at each tag). Both parsers are strict
(inkbooth.backends cites where): one unknown field drops the whole platform spec or fails the run.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from inkbooth import backends, cluster, runs
from inkbooth.config import from_dict
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "tests" / "data" / "kfp_platform_schema.json").read_text())
TAGS = sorted(SCHEMA, key=backends.parse)
CLUSTER_FILES = [None, *sorted((REPO / "examples").glob("cluster-*.yaml"))]


def unknown_fields(value, message: str, messages: dict, where: str = "") -> list[str]:
    """The fields of ``value`` that ``message`` (and the messages inside it) do not define, as paths."""
    if message.startswith("google.protobuf.") or message not in messages:
        return []
    fields = messages[message]
    found = []
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            found.append(path)
            continue
        spec = fields[key]
        target = spec.get("message")
        if not target:
            continue
        if spec.get("map"):
            for k, v in item.items():
                found += unknown_fields(v, target, messages, f"{path}[{k}]")
        elif spec.get("repeated"):
            for i, v in enumerate(item):
                found += unknown_fields(v, target, messages, f"{path}[{i}]")
        else:
            found += unknown_fields(item, target, messages, path)
    return found


def violations(platform_doc: dict, tag: str) -> list[str]:
    """What the backend at ``tag`` cannot parse: in the platform spec (the API server's strict parse) and
    in each task's Kubernetes config (the Argo compiler's strict parse; a Struct in the platform spec)."""
    messages = SCHEMA[tag]["messages"]
    bad = unknown_fields(platform_doc, "ml_pipelines.PlatformSpec", messages)
    for name, executor in platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        bad += unknown_fields(executor, "kfp_kubernetes.KubernetesExecutorConfig", messages, f"executors[{name}]")
    return bad


def settings_for(path, tag: str) -> cluster.ClusterConfig:
    settings = cluster.load(str(path)) if path else cluster.ClusterConfig()
    settings.validate()
    return settings.for_backend(tag)


def test_the_checker_sees_what_a_backend_would_refuse():
    platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-a": {
        "secretAsEnv": [{"secretName": "s", "keyToEnv": [{"secretKey": "k", "envVar": "K"}], "optional": True}],
        "securityContext": {"runAsUser": 1}}}},
        "pipelineConfig": {"activeDeadlineSeconds": 5}}}}
    assert violations(platform, "2.17.0") == []
    assert violations(platform, "2.16.0") == ["platforms[kubernetes].pipelineConfig.activeDeadlineSeconds"]
    assert set(violations(platform, "2.14.0")) == {"platforms[kubernetes].pipelineConfig.activeDeadlineSeconds",
                                                   "executors[exec-a].secretAsEnv[0].optional",
                                                   "executors[exec-a].securityContext"}


def test_the_schema_covers_every_supported_contract():
    assert [backends.contract(t) for t in TAGS] == list(backends.SUPPORTED)


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.stem if p else "defaults")
def test_every_pipeline_compiles_within_the_contract(tag, path, tmp_path):
    settings = settings_for(path, tag)
    for name in runs.PIPELINES:
        ir, platform = yaml.safe_load_all(runs.compile_pipeline(name, tmp_path / f"{name}.yaml", settings).read_text())
        assert violations(platform, tag) == [], f"{name} for KFP {tag} with {path}"
        k8s = platform["platforms"]["kubernetes"]
        executors = k8s["deploymentSpec"]["executors"]
        # What the backend honours is there: without it a run would be less safe than it needs to be.
        if settings.honours("pipeline_config"):
            assert k8s["pipelineConfig"]["resourceTtlOnSuccess"] == settings.ttl_seconds
        if settings.honours("security_context"):
            assert all(e["securityContext"]["runAsNonRoot"] for e in executors.values())
        if settings.credentials == "secret":
            assert all(any(not s.get("optional") for s in e["secretAsEnv"]) for e in executors.values())


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.stem if p else "defaults")
def test_retry_windows_hold_every_attempt(path, tmp_path):
    """Argo measures backoff.maxDuration from the first attempt's start and kills an attempt at its end:
    the window must hold every attempt at its full timeout, or a long stage is never retried."""
    settings = settings_for(path, backends.DEFAULT)
    for name in runs.PIPELINES:
        ir, platform = yaml.safe_load_all(runs.compile_pipeline(name, tmp_path / f"{name}.yaml", settings).read_text())
        executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        tasks = dict(ir["root"]["dag"]["tasks"])
        for comp in ir["components"].values():
            tasks.update(comp.get("dag", {}).get("tasks", {}))
        checked = 0
        for task, spec in tasks.items():
            policy = spec.get("retryPolicy")
            if not policy:
                continue
            executor = ir["components"][spec["componentRef"]["name"]]["executorLabel"]
            timeout = executors[executor].get("activeDeadlineSeconds")
            window = int(re.fullmatch(r"(\d+)s", policy["backoffMaxDuration"]).group(1))
            attempts = int(policy["maxRetryCount"]) + 1
            assert timeout and window >= attempts * int(timeout), (name, task, window, timeout)
            assert float(policy["backoffFactor"]).is_integer(), "Argo parses the factor as an integer"
            checked += 1
        assert checked, name


def test_a_backend_without_a_feature_gets_none_of_it(tmp_path):
    """2.16 has no PipelineConfig TTL/deadline: sent anyway, the server would drop every Kubernetes
    setting. 2.14 has no optional Secret env: the S3 settings then come from the cluster file."""
    settings = from_dict(cluster.ClusterConfig, {"storage": {"endpoint": "https://storage.googleapis.com",
                                                             "region": "auto", "checksums": "when_required"}})
    for tag, has_config, has_optional in (("2.17.0", True, True), ("2.16.1", False, True), ("2.14.4", False, False)):
        ir, platform = yaml.safe_load_all(
            runs.compile_pipeline("ocr", tmp_path / "ocr.yaml", settings.for_backend(tag)).read_text())
        k8s = platform["platforms"]["kubernetes"]
        assert ("pipelineConfig" in k8s) == has_config, tag
        optional = [s for e in k8s["deploymentSpec"]["executors"].values() for s in e.get("secretAsEnv", [])
                    if s.get("optional")]
        assert bool(optional) == has_optional, tag
        env = {e["name"]: e["value"] for e in ir["deploymentSpec"]["executors"]["exec-recognize-shard"]["container"]["env"]}
        assert env["AWS_ENDPOINT_URL_S3"] == "https://storage.googleapis.com"
        assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == env["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "when_required"
        secret_keys = {kv["envVar"] for s in optional for kv in s["keyToEnv"]}
        assert not secret_keys & set(env), "a setting comes from one place, never twice"


def test_versions_map_to_contracts():
    assert backends.name("2.16.1") == "2.16" and backends.name("v2.18.0") == "2.17"
    assert backends.name("2.10.0") == "2.5"  # no backend releases between 2.5 and 2.14
    with pytest.raises(ValueError, match="older than 2.5"):
        backends.contract("2.4.1")
    with pytest.raises(ValueError, match="expected MAJOR.MINOR"):
        backends.parse("latest")


def test_the_readme_backend_table_is_the_contract():
    readme = (REPO / "README.md").read_text()
    for key, feature in backends.FEATURES.items():
        row = next((line for line in readme.splitlines() if line.startswith("|") and f"`{key}`" in line), None)
        assert row, f"README backend table: no row for {key}"
        assert f"{feature.since[0]}.{feature.since[1]}" in row and feature.source.split()[0] in row, key
