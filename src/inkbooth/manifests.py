"""``inkbooth manifests``: the Kubernetes manifests of one cluster file, as a kustomize overlay.

The cluster file (``inkbooth.cluster.ClusterConfig``) is the one place a deployment's settings live;
the compiled pipelines and these manifests both follow it. The overlay places ``k8s/base`` (the
runner service account with its Role, the kfp-launcher ConfigMap) in the namespace the runs execute
in (``kfp.namespace``: KFP's own when standalone, the profile's when multi-user; never one of
ours, since KFP decides it), writes the launcher's store settings from ``storage`` (endpoint,
region, path style, keys from the Secret or the pod's identity), binds the runner to a cloud
identity (``runner_annotations``), names every image in ``registry`` (kustomize ``images:``), and
adds the in-cluster SeaweedFS (``storage.in_cluster``) and the Kubeflow Trainer runtime (opt-in)
with the training stage's placement. ``kubectl apply -k`` applies it; nothing in it is a Secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from inkbooth import __version__, _image
from inkbooth.cluster import PIPELINES_ACCESS_LABEL, ClusterConfig

S3_SECRET = "inkbooth-s3"
RUNNER = "inkbooth-runner"
HEADER = "# Written by `inkbooth manifests --cluster {source}`; change the cluster file and run it again.\n"


def _yaml(data: Any) -> str:
    """YAML with multi-line strings as literal blocks (the launcher's providers stay readable)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, value: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=110)


def providers(settings: ClusterConfig) -> dict[str, Any]:
    """The kfp-launcher's ``providers`` for the store (backend/src/v2/config/s3.go: endpoint, region,
    disableSSL, forcePathStyle, credentials fromEnv or secretRef; the launcher signs with the region)."""
    endpoint = settings.s3_endpoint()
    default: dict[str, Any] = {}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        default["endpoint"] = host.rstrip("/")
        default["disableSSL"] = scheme == "http"
    else:
        default["endpoint"] = "s3.amazonaws.com"
        default["disableSSL"] = False
    if settings.storage.region:
        default["region"] = settings.storage.region
    style = settings.storage.addressing_style
    # The launcher's own default is path style (s3.go); AWS S3 and GCS take virtual hosts as well.
    default["forcePathStyle"] = style != "virtual"
    if settings.credentials == "workload-identity":
        default["credentials"] = {"fromEnv": True}
    else:
        default["credentials"] = {"fromEnv": False, "secretRef": {
            "secretName": S3_SECRET, "accessKeyKey": "AWS_ACCESS_KEY_ID", "secretKeyKey": "AWS_SECRET_ACCESS_KEY"}}
    return {"s3": {"default": default}}


def launcher(settings: ClusterConfig) -> dict[str, Any]:
    """The kfp-launcher ConfigMap. Standalone KFP owns the one in its namespace: inkbooth sets only the
    providers there and leaves ``defaultPipelineRoot`` to KFP (inkbooth submit passes its own root)."""
    data = {"providers": _yaml(providers(settings))}
    if settings.kfp.mode == "multi-user":
        data = {"defaultPipelineRoot": settings.storage.pipeline_root, **data}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kfp-launcher"}, "data": data}


def images(settings: ClusterConfig) -> list[dict[str, str]]:
    """kustomize ``images:``: every inkbooth image the manifests name, in the file's registry (by digest
    where the file pins one)."""
    out = []
    for variant in _image.VARIANTS:
        entry = {"name": f"{_image.REGISTRY}/inkbooth-{variant}"}
        if variant in settings.images:
            repo, _, digest = _image.by_digest(variant, settings.images[variant], settings.registry).partition("@")
            entry.update(newName=repo, digest=digest)
        else:
            entry.update(newName=f"{settings.registry}/inkbooth-{variant}", newTag=__version__)
        out.append(entry)
    return out


def pipelines_access() -> list[dict[str, Any]]:
    """Multi-user: what lets the exit task ask KFP's API which tasks failed. A PodDefault (Kubeflow's
    admission webhook) mounts a token of the pipelines audience into pods labelled access-ml-pipeline,
    where the kfp client reads it; the runner may view the profile's runs (KFP's aggregated
    kubeflow-pipelines-view role, 2.17.0 manifests/kustomize/base/installs/multi-user/view-edit-cluster-roles.yaml)."""
    folder = "/var/run/secrets/kubeflow/pipelines"
    pod_default = {
        "apiVersion": "kubeflow.org/v1alpha1", "kind": "PodDefault", "metadata": {"name": PIPELINES_ACCESS_LABEL},
        "spec": {"desc": "Allow access to Kubeflow Pipelines",
                 "selector": {"matchLabels": {PIPELINES_ACCESS_LABEL: "true"}},
                 "volumes": [{"name": "volume-kf-pipeline-token", "projected": {"sources": [{"serviceAccountToken": {
                     "path": "token", "expirationSeconds": 7200, "audience": "pipelines.kubeflow.org"}}]}}],
                 "volumeMounts": [{"mountPath": folder, "name": "volume-kf-pipeline-token", "readOnly": True}],
                 "env": [{"name": "KF_PIPELINES_SA_TOKEN_PATH", "value": f"{folder}/token"}]}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "inkbooth-runner-pipelines-view"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "kubeflow-pipelines-view"},
               "subjects": [{"kind": "ServiceAccount", "name": RUNNER}]}
    return [pod_default, binding]


def _trainer_patch(settings: ClusterConfig) -> list[dict[str, Any]]:
    """The Trainer runtime's pods placed like the pipeline's training stage (node selector, tolerations)."""
    train = settings.stage("train")
    spec = "/spec/template/spec/replicatedJobs/0/template/spec/template/spec"
    ops: list[dict[str, Any]] = []
    if train.node_selector:
        ops.append({"op": "add", "path": f"{spec}/nodeSelector", "value": dict(sorted(train.node_selector.items()))})
    extra = [{k: v for k, v in (("key", t.key), ("operator", t.operator), ("value", t.value), ("effect", t.effect))
              if v} for t in train.tolerations if t.key != train.gpu_resource]
    for t in extra:
        ops.append({"op": "add", "path": f"{spec}/tolerations/-", "value": t})
    return ops


RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def ui_env(settings: ClusterConfig, key_secret: str | None) -> list[dict[str, Any]]:
    """The environment a KFP UI server reads S3 with (frontend/server/configs.ts: AWS_S3_ENDPOINT is a
    host name without a port, AWS_SSL, AWS_REGION, the keys)."""
    env: list[dict[str, Any]] = []
    if key_secret:
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": key_secret, "key": k}}}
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    endpoint = settings.s3_endpoint()
    scheme, _, host = endpoint.partition("://")
    if endpoint and ":" not in host.rstrip("/"):
        env += [{"name": "AWS_S3_ENDPOINT", "value": host.rstrip("/")},
                {"name": "AWS_SSL", "value": "true" if scheme == "https" else "false"}]
    if settings.storage.region:
        env.append({"name": "AWS_REGION", "value": settings.storage.region})
    return env


def _write_ui(settings: ClusterConfig, out: Path, source: str) -> None:
    """What the KFP UI needs to show the reports, for this cluster file (README: Reports in the KFP UI).

    * ``kustomization.yaml`` (``kubectl apply -k``): lets the shared UI read the one Secret the launcher
      names, where the UI still reads Secret-backed provider info: backends before 2.17, or runs in the
      UI's own namespace (2.17.0 frontend/server/handlers/artifacts.ts:290-311);
    * ``ml-pipeline-ui.patch.yaml``: the shared UI's own S3 settings and read-only keys, for the rest;
    * multi-user: ``ml-pipeline-ui-artifact.patch.yaml``, the profile's artifact server (which the UI
      proxies to) with the profile's keys, made to pass the restricted Pod Security Standard.
    """
    out.mkdir(parents=True, exist_ok=True)
    ns, system = settings.kfp.namespace, settings.kfp.system_namespace
    keyed = settings.credentials == "secret"
    kustomization: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                     "namespace": ns, "resources": []}
    if keyed:
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "kfp-ui-read-s3-credentials"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [S3_SECRET], "verbs": ["get"]}]}
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "kfp-ui-read-s3-credentials"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "kfp-ui-read-s3-credentials"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ml-pipeline-ui", "namespace": system}]}
        (out / "rbac.yaml").write_text(_yaml(role) + "---\n" + _yaml(binding))
        kustomization["resources"].append("rbac.yaml")
    (out / "kustomization.yaml").write_text(
        f"# Written by `inkbooth manifests --cluster {source}`. `kubectl apply -k {out}`: the shared KFP UI may\n"
        f"# read the Secret the launcher names ({S3_SECRET}, in {ns}) and nothing else.\n" + _yaml(kustomization))
    ui = {"spec": {"template": {"spec": {"containers": [
        {"name": "ml-pipeline-ui", "env": ui_env(settings, "inkbooth-s3-read" if keyed else None)}]}}}}
    note = (f"# `kubectl -n {system} patch deployment ml-pipeline-ui --patch-file {out}/ml-pipeline-ui.patch.yaml`: "
            "the UI reads\n# artifacts with its own S3 settings where it ignores the launcher's Secret (KFP 2.17+, "
            "runs outside its\n# namespace). " + (f"Create the read-only key first: kubectl -n {system} create secret "
                                                 "generic inkbooth-s3-read ...\n" if keyed else
                                                 "Keyless: bind ml-pipeline-ui's service account to a reading role.\n"))
    (out / "ml-pipeline-ui.patch.yaml").write_text(note + _yaml(ui))
    if settings.kfp.mode == "multi-user":
        artifact = {"spec": {"template": {"spec": {"securityContext": RESTRICTED_POD, "containers": [
            {"name": "ml-pipeline-ui-artifact", "env": ui_env(settings, S3_SECRET if keyed else None),
             "securityContext": RESTRICTED_CONTAINER}]}}}}
        (out / "ml-pipeline-ui-artifact.patch.yaml").write_text(
            f"# `kubectl -n {ns} patch deployment ml-pipeline-ui-artifact --patch-file "
            f"{out}/ml-pipeline-ui-artifact.patch.yaml`:\n# the profile's artifact server reads with the profile's "
            "keys and passes the restricted Pod Security\n# Standard (the profile controller makes it without a "
            "securityContext).\n" + _yaml(artifact))


def overlay(settings: ClusterConfig, out: str | Path, *, k8s: str | Path = "k8s", trainer: bool = False,
            source: str = "") -> Path:
    """Write the overlay of ``settings`` into ``out`` (kustomization.yaml and its patches); returns it."""
    settings.validate()
    if not settings.storage.region:
        raise ValueError("storage.region: KFP's launcher signs every request with a region (aws-sdk-go-v2 sends "
                         "nothing without one): the bucket's region on AWS, auto on GCS, any (e.g. us-east-1) for "
                         "SeaweedFS or MinIO")
    out, k8s = Path(out), Path(k8s)
    if not (k8s / "base" / "kustomization.yaml").is_file():
        raise ValueError(f"{k8s}: not inkbooth's k8s folder (no base/kustomization.yaml); pass --k8s")
    out.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(k8s.resolve(), out.resolve()))
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": settings.kfp.namespace,
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "inkbooth"}, "includeSelectors": False}],
        "resources": [str(rel / "base")],
        "components": [],
        "patches": [{"path": "launcher.yaml"}],
        "images": images(settings),
    }
    (out / "launcher.yaml").write_text(_yaml(launcher(settings)))
    if settings.runner_annotations:
        (out / "runner.yaml").write_text(_yaml({"apiVersion": "v1", "kind": "ServiceAccount",
                                                "metadata": {"name": RUNNER,
                                                             "annotations": dict(settings.runner_annotations)}}))
        kustomization["patches"].append({"path": "runner.yaml"})
    if settings.kfp.mode == "multi-user":
        (out / "pipelines-access.yaml").write_text("---\n".join(_yaml(d) for d in pipelines_access()))
        kustomization["resources"].append("pipelines-access.yaml")
    if settings.storage.in_cluster:
        kustomization["components"].append(str(rel / "object-store"))
        # KFP's API server and UI read artifacts from the store: admit them from KFP's own namespace.
        kustomization["patches"].append({
            "target": {"kind": "NetworkPolicy", "name": "inkbooth-store"},
            "patch": _yaml([{"op": "replace", "path": "/spec/ingress/0/from/2/namespaceSelector/matchLabels",
                             "value": {"kubernetes.io/metadata.name": settings.kfp.system_namespace}}])})
    if trainer:
        kustomization["components"].append(str(rel / "trainer" / "runtime"))
        ops = _trainer_patch(settings)
        if ops:
            kustomization["patches"].append({"target": {"kind": "TrainingRuntime", "name": "inkbooth-torch"},
                                             "patch": _yaml(ops)})
    if not kustomization["components"]:
        del kustomization["components"]
    _write_ui(settings, out / "ui", source or "FILE")
    header = HEADER.format(source=source or "FILE")
    if settings.credentials == "secret":
        header += (f"# Before `kubectl apply -k {out}`: kubectl create secret generic {S3_SECRET} -n "
                   f"{settings.kfp.namespace} --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...\n")
    else:
        header += f"# `kubectl apply -k {out}`: keyless, no Secret (the runner's cloud identity).\n"
    (out / "kustomization.yaml").write_text(header + _yaml(kustomization))
    return out / "kustomization.yaml"
