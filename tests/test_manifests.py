"""k8s/: every overlay builds with kustomize, validates against the Kubernetes schemas, and passes
the checks the schemas cannot make (tolerations, GPU limits, /dev/shm, TrainJob, S3 wiring)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inkbooth import __version__
from tests.conftest import REPO

OVERLAYS = sorted(p.name for p in (REPO / "k8s" / "overlays").iterdir() if p.is_dir())
KUBE_VERSION = "1.32.0"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("kubectl is needed to build the kustomize overlays (Debian package kubectl)")
        pytest.skip("kubectl not installed")
    return found


def _build(folder: Path) -> str:
    built = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return built.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    out = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    out.write_text(_build(REPO / "k8s" / "overlays" / request.param))
    return request.param, out, [d for d in yaml.safe_load_all(out.read_text()) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    specs = [(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in of_kind(docs, "Deployment")]
    for rt in of_kind(docs, "TrainingRuntime"):
        for job in rt["spec"]["template"]["spec"]["replicatedJobs"]:
            specs.append((f"TrainingRuntime/{rt['metadata']['name']}/{job['name']}",
                          job["template"]["spec"]["template"]["spec"]))
    return specs


def test_schemas_accept_every_object(rendered):
    name, path, docs = rendered
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", "-k", KUBE_VERSION, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "FAIL" not in result.stdout.upper().replace("FAILURE", "")
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "TrainJob", "TrainingRuntime"} <= {d["kind"] for d in docs}


def test_tolerations_and_gpu_placement(rendered):
    name, _, docs = rendered
    for where, spec in pod_specs(docs):
        for t in spec.get("tolerations", []):
            assert t.get("operator", "Equal") in ("Exists", "Equal"), (where, t)
            assert t.get("effect", "") in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"), (where, t)
            if t.get("operator") == "Exists":
                assert "value" not in t, f"{where}: a toleration with operator Exists takes no value"
    runtime = next(spec for where, spec in pod_specs(docs) if where.startswith("TrainingRuntime"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in runtime["tolerations"]
    (job,) = of_kind(docs, "TrainJob")
    assert int(job["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"]) >= 1
    if name == "eks":  # Karpenter: GPU nodes carry the taint the pods tolerate, in the pool they select
        pools = [d for d in yaml.safe_load_all(_build(REPO / "k8s" / "cluster" / "eks-karpenter")) if d]
        (pool,) = of_kind(pools, "NodePool")
        taints = pool["spec"]["template"]["spec"]["taints"]
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in taints)
        assert runtime["nodeSelector"] == {"karpenter.sh/nodepool": pool["metadata"]["name"]}
        assert all("namespace" not in d["metadata"] for d in pools), "cluster-scoped objects take no namespace"


def test_training_pods_have_a_memory_backed_shm_and_run_as_non_root(rendered):
    _, _, docs = rendered
    for where, spec in pod_specs(docs):
        assert spec.get("securityContext", {}).get("runAsNonRoot") is True, where
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert ":" in c["image"] and not c["image"].endswith(":latest"), f"{where}: pin the image"
        if where.startswith("TrainingRuntime"):
            volumes = {v["name"]: v for v in spec["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
            assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"


def test_trainjob_is_complete_and_runs_our_entry_point(rendered):
    _, _, docs = rendered
    (job,) = of_kind(docs, "TrainJob")
    runtimes = {r["metadata"]["name"] for r in of_kind(docs, "TrainingRuntime")}
    spec = job["spec"]
    assert spec["runtimeRef"]["name"] in runtimes
    assert spec["runtimeRef"]["kind"] == "TrainingRuntime"
    trainer = spec["trainer"]
    assert trainer["image"] == f"ghcr.io/inkbooth/inkbooth-train-cuda:{__version__}"
    assert trainer["numNodes"] >= 1
    assert trainer["command"] == ["torchrun"] and trainer["args"][:2] == ["-m", "inkbooth.dreambooth.train"]
    from inkbooth.dreambooth.train import build_parser

    args = build_parser().parse_args(trainer["args"][2:])  # the flags exist and parse
    assert args.model and args.instance_images and args.class_images
    envs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in trainer["env"]}
    secrets = {s["metadata"]["name"] for s in of_kind(docs, "Secret")}
    assert set(envs.values()) <= secrets and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(envs)


def test_kfp_launcher_points_at_the_s3_secret(rendered):
    name, _, docs = rendered
    (launcher,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "kfp-launcher"]
    assert launcher["data"]["defaultPipelineRoot"].startswith("s3://")
    provider = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]
    ref = provider["credentials"]["secretRef"]
    (secret,) = [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == ref["secretName"]]
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["stringData"])
    assert all(d["metadata"].get("namespace") == "inkbooth" for d in docs if d["kind"] != "Namespace"), \
        "every namespaced object lands in the inkbooth namespace"
    if of_kind(docs, "Deployment"):  # the in-cluster store: launcher, Secret and Service agree
        (svc,) = of_kind(docs, "Service")
        assert provider["endpoint"].startswith(f"{svc['metadata']['name']}.inkbooth.svc")
        assert secret["stringData"]["AWS_ENDPOINT_URL_S3"].startswith(f"http://{svc['metadata']['name']}.inkbooth.svc")


def test_templates_hold_placeholders_not_credentials(rendered):
    _, _, docs = rendered
    for secret in of_kind(docs, "Secret"):
        for key, value in secret["stringData"].items():
            if "SECRET" in key or "KEY_ID" in key or key.endswith(".json"):
                assert "REPLACE_WITH" in value, f"{secret['metadata']['name']}/{key} must stay a template"


def test_make_manifests_renders_and_validates():
    out = subprocess.run(["make", "-s", "-C", str(REPO), "-n", "manifests"], capture_output=True, text=True)
    assert "kustomize" in out.stdout and "kubernetes-validate" in out.stdout, shlex.join(out.args)
