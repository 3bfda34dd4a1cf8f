"""The checks of ``inkbooth doctor`` past KFP's settings: the runner's rights, Pod Security, the UI, GPU nodes.

``ClusterDoctor`` adds them to ``inkbooth.doctor_checks.Doctor`` (KFP, launcher, credentials). The runner
is the cluster file's ``service_account``, else KFP's default: ``pipeline-runner`` (apiserver
common/const.go), ``default-editor`` in multi-user installs (``DEFAULTPIPELINERUNNERSERVICEACCOUNT``).
The UI facts are from KFP's frontend at 2.17.0: it ignores Secret-backed provider info for runs outside
its own namespace (frontend/server/handlers/artifacts.ts) and otherwise reads with its env
``AWS_S3_ENDPOINT`` (a host name, no port), ``AWS_SSL``, ``AWS_REGION`` (frontend/server/configs.ts);
the profile controller's ``ml-pipeline-ui-artifact`` has no securityContext (its sync.py). GPU drivers
are read from NVIDIA GPU Feature Discovery's node labels (NVIDIA/k8s-device-plugin internal/lm/nvml.go).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from inkbooth import backends, runtime
from inkbooth.doctor_checks import (
    APPLY,
    KFP_RUNNER,
    Doctor,
    container_of,
    field,
    shown,
    truthy,
    where,
)

IMAGE_CUDA = 13  # the CUDA images carry PyTorch's CUDA 13.0 wheels (docker/*-cuda, README "Requirements")
MIN_DRIVER = runtime.MIN_DRIVER[IMAGE_CUDA]
# GPU Feature Discovery's driver labels, current then deprecated spelling (newVersionLabeler).
GFD_DRIVER_LABELS = ("nvidia.com/cuda.driver-version.full", "nvidia.com/cuda.driver-version.major",
                     "nvidia.com/cuda.driver.major")
ENFORCE = "pod-security.kubernetes.io/enforce"


def restricted_gaps(pod: dict) -> list[str]:
    """What a pod spec lacks to pass the restricted Pod Security Standard (the fields it checks most)."""
    level, gaps = pod.get("securityContext") or {}, set()
    for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        sc = c.get("securityContext") or {}
        if not sc.get("runAsNonRoot", level.get("runAsNonRoot")):
            gaps.add("runAsNonRoot")
        if sc.get("allowPrivilegeEscalation") is not False:
            gaps.add("allowPrivilegeEscalation: false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            gaps.add("capabilities.drop [ALL]")
        if (sc.get("seccompProfile") or level.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault",
                                                                                            "Localhost"):
            gaps.add("seccompProfile RuntimeDefault")
    return sorted(gaps)


def driver_major(labels: dict[str, str]) -> int | None:
    """The NVIDIA driver branch a node's GPU Feature Discovery labels name (e.g. 580), if any."""
    for key in GFD_DRIVER_LABELS:
        found = re.match(r"\d+", labels.get(key, ""))
        if found:
            return int(found.group())
    return None


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


class ClusterDoctor(Doctor):
    """Every check: KFP's and the storage's, then the runner's rights, Pod Security, the UI and GPU nodes."""

    def checks(self) -> list[Callable[[], None]]:
        return [*super().checks(), self.runner_rights, self.pod_security, self.ui, self.gpus]

    def runner(self) -> str:
        """The service account the runs' pods use: the cluster file's, else KFP's default for this install."""
        if self.s.service_account:
            return self.s.service_account
        api_server = self.deployment("ml-pipeline")
        found = api_server and self.env(api_server, "DEFAULTPIPELINERUNNERSERVICEACCOUNT", "ml-pipeline-api-server")
        return found or KFP_RUNNER

    def runner_rights(self) -> None:
        """The runner account may read the launcher settings and the Secret, and report task results."""
        account = self.runner()
        if self.get(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{account}") is None:
            return self.add("runner-rights", "FAIL", f"no service account {account} in {self.ns}: the runs' pods "
                            "cannot be created", APPLY if account == "inkbooth-runner" else
                            f"kubectl -n {self.ns} create serviceaccount {account}")
        user = f"system:serviceaccount:{self.ns}:{account}"
        asks = [("get", "configmaps/kfp-launcher"), ("create", "workflowtaskresults.argoproj.io")]
        if self.s.credentials == "secret":
            asks.append(("get", f"secrets/{self.secret_name}"))
        answers = {f"{verb} {what}": self.api.can_i(verb, what, self.ns, user) for verb, what in asks}
        denied = [k for k, v in answers.items() if v is False]
        unknown = [k for k, v in answers.items() if v is None]
        if denied:
            return self.add("runner-rights", "FAIL", f"{account} in {self.ns} may not {', '.join(denied)}",
                            f"{APPLY} (Role inkbooth-runner for inkbooth-runner; its Secret rule names "
                            f"inkbooth-s3), or for another account: kubectl -n {self.ns} create rolebinding "
                            f"{account}-inkbooth --role=inkbooth-runner --serviceaccount={self.ns}:{account}")
        if unknown:
            return self.add("runner-rights", "warn", f"kubectl auth can-i --as={user} gave no answer for "
                            f"{', '.join(unknown)}", "run doctor as a user who may impersonate service accounts")
        self.add("runner-rights", "ok", f"{account} may {', '.join(answers)}")

    def pod_security(self) -> None:
        """(6) A namespace enforcing restricted rejects pods without a securityContext (KFP before 2.16)."""
        labels = ((self.get(f"/api/v1/namespaces/{self.ns}") or {}).get("metadata") or {}).get("labels") or {}
        level = labels.get(ENFORCE, "")
        if level != "restricted":
            return self.add("pod-security", "ok", f"{self.ns} enforces {level or 'no'} Pod Security level")
        if backends.honours(self.contract, "security_context"):
            self.add("pod-security", "ok", f"{self.ns} enforces restricted; KFP {self.contract} sets the pods' "
                     "securityContext")
        else:
            self.add("pod-security", "FAIL", f"{self.ns} enforces the restricted Pod Security Standard, but KFP "
                     f"{self.contract} cannot set a pod securityContext (2.16+): every run's pods are rejected",
                     f"kubectl label namespace {self.ns} {ENFORCE}=baseline --overwrite (or upgrade KFP to 2.16+)")
        artifacts = self.get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/ml-pipeline-ui-artifact")
        gaps = restricted_gaps(artifacts["spec"]["template"]["spec"]) if artifacts else []
        if gaps:
            self.add("ui-artifact-server", "warn", f"ml-pipeline-ui-artifact in {self.ns} lacks {', '.join(gaps)}: "
                     "under restricted its pods are rejected and the UI's artifact reads for this namespace fail",
                     f"kubectl -n {self.ns} patch deployment ml-pipeline-ui-artifact --patch-file "
                     "DIR/ui/ml-pipeline-ui-artifact.patch.yaml (from inkbooth manifests: a restricted "
                     "securityContext)")

    def ui(self) -> None:
        """(9) Whether the KFP UI can read the runs' artifacts (reports) and with which settings."""
        ui = self.deployment("ml-pipeline-ui")
        if not ui:
            return self.add("ui-reports", "warn", "no ml-pipeline-ui Deployment found",
                            "read reports with inkbooth report RUN_OUTPUT")
        ui_ns = self.env(ui, "FRONTEND_SERVER_NAMESPACE", "ml-pipeline-ui") or "kubeflow"  # configs.ts default
        image = str(container_of(ui, "ml-pipeline-ui").get("image", ""))
        tag = image.rpartition(":")[2] if "@" not in image else ""
        version = tag if re.match(r"^v?\d+\.\d+", tag) else self.version or self.s.kfp.backend
        credentials = field(self.provider, "credentials") or {}
        secret_backed = (self.s.credentials == "secret" and self.provider is not None
                         and not truthy(field(credentials, "fromEnv")))
        ignored = secret_backed and backends.parse(version)[:2] >= (2, 17) and self.ns != ui_ns
        proxied = (truthy(self.env(ui, "ARTIFACTS_SERVICE_PROXY_ENABLED", "ml-pipeline-ui"))
                   and self.get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/ml-pipeline-ui-artifact") is not None)
        if proxied:
            self.add("ui-reports", "ok", f"the UI hands artifact reads to ml-pipeline-ui-artifact in {self.ns}")
        elif ignored:
            self.add("ui-reports", "warn", f"the KFP UI {version} (namespace {ui_ns}) ignores Secret-backed provider "
                     f"info for runs in another namespace ({self.ns}; frontend/server/handlers/artifacts.ts): reports "
                     "will not open in the UI",
                     f"give the UI its own read-only keys (kubectl -n {ui_ns} patch deployment ml-pipeline-ui "
                     "--patch-file DIR/ui/ml-pipeline-ui.patch.yaml, from inkbooth manifests), or turn on the "
                     "per-namespace artifact server (ARTIFACTS_PROXY_ENABLED: 'true' in pipeline-install-config), "
                     "or read reports with inkbooth report RUN_OUTPUT")
        elif secret_backed:
            account = ui["spec"]["template"]["spec"].get("serviceAccountName") or "default"
            if self.api.can_i("get", f"secrets/{self.secret_name}", self.ns,
                              f"system:serviceaccount:{ui_ns}:{account}") is False:
                self.add("ui-reports", "warn", f"the UI ({ui_ns}/{account}) may not read Secret {self.secret_name} in "
                         f"{self.ns}, which the launcher's provider names",
                         "kubectl apply -k DIR/ui (from inkbooth manifests: a Role for that one Secret)")
            else:
                self.add("ui-reports", "ok", f"the UI reads artifacts with Secret {self.secret_name}'s keys")
        if proxied or (secret_backed and not ignored):
            return
        # The UI reads with its own environment: AWS_S3_ENDPOINT is a host name (no port), AWS_SSL, AWS_REGION.
        got = {k: self.env(ui, k, "ml-pipeline-ui") for k in ("AWS_S3_ENDPOINT", "AWS_SSL", "AWS_REGION")}
        host, ssl = got["AWS_S3_ENDPOINT"] or "s3.amazonaws.com", (got["AWS_SSL"] or "true").lower() != "false"
        region, store = got["AWS_REGION"] or "us-east-1", where(self.s.s3_endpoint())
        ui_place, wrong = where(host, disable_ssl=not ssl), []
        if ui_place != store:
            wrong.append(f"AWS_S3_ENDPOINT/AWS_SSL reach {shown(ui_place)}, the store is {shown(store)}")
        if self.s.storage.region and region != self.s.storage.region:
            wrong.append(f"AWS_REGION is {region}, storage.region {self.s.storage.region}")
        if not wrong:
            return self.add("ui-store", "ok", f"the UI's own S3 settings reach {shown(store)}")
        target = "s3.amazonaws.com" if store[1] == "aws" else store[1]
        fix = (f"kubectl -n {ui_ns} set env deployment/ml-pipeline-ui AWS_S3_ENDPOINT={target} "
               f"AWS_SSL={str(store[0] == 'https').lower()} AWS_REGION={self.s.storage.region or region}")
        if ":" in target:
            fix = ("the UI's AWS_S3_ENDPOINT takes no port: serve the store on 443 or 80, or read reports with "
                   "inkbooth report RUN_OUTPUT")
        self.add("ui-store", "warn", "the UI reads artifacts with its own environment: " + "; ".join(wrong), fix)

    def gpus(self) -> None:
        """(10) GPU nodes, and their NVIDIA driver against the images' CUDA."""
        asked = [n for n in self.s.stages() if self.s.stage(n).gpus]
        resources = {self.s.stage(n).gpu_resource for n in asked} or {"nvidia.com/gpu"}
        nodes = [n for n in (self.get("/api/v1/nodes") or {}).get("items") or []
                 if any(_quantity(((n.get("status") or {}).get(k) or {}).get(r, 0))
                        for k in ("capacity", "allocatable") for r in resources)]
        if not nodes:
            if not asked:
                return self.add("gpu-nodes", "ok", "no GPU nodes, and no stage asks for GPUs")
            pools = self.optional("/apis/karpenter.sh/v1/nodepools")
            scaler = ("Karpenter NodePools" if (pools or {}).get("items")
                      else "cluster-autoscaler" if self.optional(
                          "/api/v1/namespaces/kube-system/configmaps/cluster-autoscaler-status") else "")
            if scaler:
                return self.add("gpu-nodes", "warn", f"no node has {', '.join(sorted(resources))} now; {scaler} "
                                "may add GPU nodes from zero (their driver is checked once one exists)",
                                "check that a GPU NodePool / node group can scale up (tainted nvidia.com/gpu)")
            return self.add("gpu-nodes", "FAIL", f"{', '.join(asked)} ask for GPUs, but no node has "
                            f"{', '.join(sorted(resources))} and no autoscaler was found",
                            "add GPU nodes with the NVIDIA device plugin, or set gpus: 0 for those stages")
        self.add("gpu-nodes", "ok", f"{len(nodes)} GPU node(s): " + ", ".join(n["metadata"]["name"] for n in nodes))
        branches = {n["metadata"]["name"]: driver_major((n.get("metadata") or {}).get("labels") or {}) for n in nodes}
        old = [f"{name} (R{major})" for name, major in branches.items() if major is not None and major < MIN_DRIVER]
        unlabelled = [name for name, major in branches.items() if major is None]
        need = f"CUDA {IMAGE_CUDA} (the CUDA images) needs driver R{MIN_DRIVER}+"
        upgrade = f"upgrade the NVIDIA driver on those nodes to R{MIN_DRIVER} or newer (a newer GPU AMI or driver)"
        if old and len(old) == len(branches):
            self.add("gpu-driver", "FAIL", f"every GPU node's driver is too old: {', '.join(old)}; {need}", upgrade)
        elif old:
            self.add("gpu-driver", "warn", f"some GPU nodes' driver is too old: {', '.join(old)}; {need}",
                     upgrade + ", or keep GPU stages off them with node_selector")
        elif len(unlabelled) < len(branches):
            self.add("gpu-driver", "ok", f"driver R{MIN_DRIVER}+ on every labelled GPU node, as CUDA {IMAGE_CUDA} "
                     "needs")
        if unlabelled:
            self.add("gpu-driver", "warn", f"no driver version label ({GFD_DRIVER_LABELS[0]}) on "
                     f"{', '.join(unlabelled)}",
                     "install NVIDIA GPU Feature Discovery (the GPU Operator or the device plugin's chart with "
                     f"gfd.enabled=true), or check nvidia-smi on the node: R{MIN_DRIVER}+ is needed")
