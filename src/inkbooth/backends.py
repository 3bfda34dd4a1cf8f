"""The KFP backend contract: which backends inkbooth compiles for, and what each one honours.

A pipeline compiled with kfp 2.17 may carry Kubernetes settings (the IR's platform spec) that an
older API server does not know. What happens then was read in the backend's own source at each
tag (kubeflow/pipelines; ``FEATURES`` cites the files) and is not graceful:

* the server parses the platform spec strictly and, when it fails, drops the **whole** platform spec
  without a word (``backend/src/apiserver/template/v2_template.go``, ``IsPlatformSpecWithKubernetesConfig``):
  the run starts with no Secret env, no volumes, no tolerations, no timeouts;
* from 2.14 the Argo compiler parses each task's Kubernetes config strictly too
  (``backend/src/v2/compiler/argocompiler/container.go``): an unknown field fails the run's creation;
* 2.5 drops unknown fields of a task's config (its driver reads with ``AllowUnknownFields``).

So ``inkbooth compile --backend X.Y`` (and ``inkbooth submit``, which asks the server its version)
emits only what that backend honours, and ``FEATURES`` says for each feature what a run does
without it. The README's backend table is this table.
"""

from __future__ import annotations

import dataclasses
import re

# The contracts inkbooth compiles for: the KFP backends the Kubeflow platform and managed offerings
# ship (Kubeflow 1.10: 2.5.0; the AI reference platform 26.03: 2.16.0) up to the current one. There
# are no backend releases between 2.5 and 2.14.
SUPPORTED = ((2, 5), (2, 14), (2, 15), (2, 16), (2, 17))
DEFAULT = "2.17"


@dataclasses.dataclass(frozen=True)
class Feature:
    """A feature of the compiled pipelines, the oldest backend that honours it, and what happens without it."""

    since: tuple[int, int]
    what: str
    without: str
    source: str


FEATURES: dict[str, Feature] = {
    "optional_secret_env": Feature(
        (2, 15),
        "optional Secret-backed environment variables (S3 settings a Secret may carry, the PDF password)",
        "left out: the S3 settings come from the cluster file's storage section (compiled as plain env), "
        "and encrypted PDFs cannot be read (their record says the password is missing). Sent anyway, "
        "2.14 refuses to create the run and 2.5 makes the keys required",
        "2.15.0 kubernetes_platform/proto/kubernetes_executor_config.proto:77, backend/src/v2/driver/k8s.go:340; "
        "2.14.0 backend/src/v2/compiler/argocompiler/container.go:283 (strict parse)"),
    "security_context": Feature(
        (2, 16),
        "a per-task securityContext (runAsUser/runAsGroup 10001, runAsNonRoot)",
        "left out: pods run as the image's user (10001, the Dockerfiles' USER), but a namespace that enforces "
        "the restricted Pod Security Standard rejects them (runAsNonRoot is not set): the manifests label "
        "it baseline for this backend. Sent anyway, 2.14/2.15 refuse the run",
        "2.16.0 kubernetes_executor_config.proto:43, backend/src/v2/driver/k8s.go:724"),
    "pipeline_config": Feature(
        (2, 17),
        "the run's TTL and deadline (dsl.PipelineConfig)",
        "left out: a finished run's workflow is kept as the cluster's Argo defaults say, and a run has no "
        "overall deadline (each stage keeps its own timeout). Sent anyway, the server drops the whole "
        "platform spec without a word (no Secret env, volumes, tolerations or timeouts)",
        "2.17.0 api/v2alpha1/pipeline_spec.proto:1175, backend/src/v2/compiler/argocompiler/argo.go:262; "
        "2.16.0 backend/src/apiserver/template/v2_template.go:410 (strict parse, no else branch)"),
    "nested_retries": Feature(
        (2, 14),
        "retries of tasks inside the exit handler and loops (every inkbooth stage but the exit task)",
        "no stage is retried: 2.5 gives a retryStrategy only to tasks of the root DAG",
        "2.5.0 backend/src/v2/compiler/argocompiler/container.go:280, 508"),
}


def parse(version: str) -> tuple[int, int, int]:
    """``2.16.1``, ``v2.16``, ``2.17.0-rc.1`` -> (2, 16, 1); a clear error for anything else."""
    found = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", str(version).strip())
    if not found:
        raise ValueError(f"backend version {version!r}: expected MAJOR.MINOR[.PATCH], e.g. 2.16")
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def contract(version: str) -> tuple[int, int]:
    """The contract a backend of ``version`` runs under: the newest supported one not newer than it."""
    found = parse(version)
    fitting = [c for c in SUPPORTED if c <= found[:2]]
    if not fitting:
        oldest = ".".join(map(str, SUPPORTED[0]))
        raise ValueError(f"KFP backend {version}: older than {oldest}, the oldest inkbooth compiles for")
    return fitting[-1]


def honours(version: str, feature: str) -> bool:
    """Whether a backend of ``version`` honours ``feature`` (a key of ``FEATURES``)."""
    return contract(version) >= FEATURES[feature].since


def left_out(wanted: str, version: str) -> list[str]:
    """What pipelines meant for backend ``wanted`` lose when compiled for ``version`` (what each feature is)."""
    return [f.what for key, f in FEATURES.items() if honours(wanted, key) and not honours(version, key)]


def name(version: str) -> str:
    """The contract of ``version`` as text, e.g. ``2.16``."""
    return ".".join(map(str, contract(version)))


def fit_platform_spec(platform: dict, version: str) -> dict:
    """The compiled platform spec without the fields a backend of ``version`` does not know but that say
    nothing (kfp-kubernetes writes ``optional: false`` into every Secret env; 2.5 and 2.14 refuse or drop
    the field). A field that would say something there is a compile bug: it raises."""
    if honours(version, "optional_secret_env"):
        return platform
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        for entry in executor.get("secretAsEnv", []):
            if entry.pop("optional", False):
                raise ValueError(f"{name}: an optional Secret env compiled for KFP {version}, which has none")
    return platform
