"""Where the pipeline uses a component, how it runs on Kubernetes (kfp-kubernetes).

One typed ``ClusterConfig`` (YAML, see ``examples/cluster-*.yaml``) says per stage: CPU and memory,
GPU count and resource, node selector, tolerations, a memory-backed ``/dev/shm``, the size of the
``/tmp`` scratch volume, a timeout, retries, caching, how many of its pods may run at once, and
whether Karpenter may disrupt it; and for the whole run: a TTL, a deadline, where S3
credentials come from, which KFP backend the runs go to (``kfp``: its version, standalone or
multi-user, the namespace runs execute in), the object store's settings (``storage``: pipeline root,
endpoint, region, addressing style, checksum mode) and the image registry. ``inkbooth compile
--cluster FILE`` bakes it into the IR, emitting only what that backend honours
(``inkbooth.backends``); the same file renders the Kubernetes manifests. A file sets only what
differs: every field it leaves out keeps that stage's default. Nothing here is read from the
environment.

Caching follows content or is off (``CACHE_KEYS``): a stage may cache only when every input that
decides its output is in its cache key, so a hit means the same result, never merely the same
names.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from inkbooth import _image, backends
from inkbooth.config import nested, option
from inkbooth.sinks.settings import SinkConfig, parse

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL = ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REQUEST_CHECKSUM_CALCULATION",
               "AWS_RESPONSE_CHECKSUM_VALIDATION", "INKBOOTH_S3_ADDRESSING_STYLE")
# The library reads an encrypted PDF's password from this variable (never from a parameter, so it
# stays out of the IR, the run's parameters and its logs); the Secret named by the pipeline's
# pdf_secret parameter holds it under the key "pdf_password".
PDF_PASSWORD_ENV = "INKBOOTH_PDF_PASSWORD"
PDF_PASSWORD_KEY = "pdf_password"
# The images' user (docker/*/Dockerfile); the pods run as it whatever the image metadata says.
IMAGE_UID = 10001
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"

# The stages that may cache, and what their cache key holds besides the component's code.
CACHE_KEYS = {
    "export_trocr": "the model's content fingerprint (pin_model: content hash, listing hash or hub commit) "
                    "and the export config",
    "plan_prior": "the shard count (the plan is a pure function of it)",
}
# Stages that register versions, in inkbooth's registry and in the model registries (inkbooth.sinks).
REGISTER_STAGES = ("export_model", "register_ocr")
# Stages run inside a ParallelFor: they take a bound on concurrent pods.
LOOP_STAGES = ("recognize", "prior")

# Argo's retryStrategy.backoff.maxDuration is one window from the first attempt's start, and a retried
# pod is killed at its end (argo-workflows v4.0.5 workflow/controller/operator.go:1024-1096): the window
# must hold every attempt at its full timeout, the waits between them, and time to be scheduled.
BACKOFF_SECONDS, BACKOFF_FACTOR = 30, 2  # Argo parses the factor as an integer (util/intstr/parametrizable.go)
SCHEDULING_SLACK = 1800  # per attempt: a GPU node scaled up from zero, an image pulled
NO_TIMEOUT_WINDOW = 7 * 86400  # the retry window of a stage without a timeout
STORE_SERVICE, STORE_PORT = "inkbooth-store", 8333  # k8s/object-store
# Kubeflow's convention for pods that talk to KFP's API from a profile (a PodDefault selects them).
PIPELINES_ACCESS_LABEL = "access-ml-pipeline"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclasses.dataclass
class Toleration:
    key: str = option("nvidia.com/gpu", "taint key")
    operator: Literal["Exists", "Equal"] = option("Exists", "Exists or Equal")
    value: str = option("", "taint value (with Equal)")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] = option("NoSchedule", "taint effect")


@dataclasses.dataclass
class StageResources:
    """How one stage's pods run."""

    cpu: str = option("1", "CPU request")
    memory: str = option("2Gi", "memory request")
    cpu_limit: str = option("", "CPU limit ('' for none)")
    memory_limit: str = option("", "memory limit ('' for none; defaults to the request when a GPU is used)")
    gpus: int = option(0, "GPUs (limit)")
    gpu_resource: str = option("nvidia.com/gpu", "extended resource name of the GPU")
    node_selector: dict[str, str] = option({}, "node labels the pod must land on")
    tolerations: list[Toleration] = option([], "taints the pod tolerates (GPU stages get nvidia.com/gpu)")
    shm: str = option("", "size of a memory-backed /dev/shm ('' for none); data loaders and NCCL need it")
    scratch: str = option("4Gi", "size limit of the /tmp emptyDir (model caches, staging); '' for none")
    timeout: int = option(3600, "seconds a pod may run (activeDeadlineSeconds; each retry gets its own); 0: none")
    retries: int = option(0, "retries (preemptible nodes)")
    caching: bool = option(False, "KFP caching (only stages whose cache key follows content may turn it on)")
    parallelism: int = option(0, "pods of this stage at once (ParallelFor stages: recognize, prior)")
    do_not_disrupt: bool = option(False, "ask Karpenter not to consolidate the node under a running pod")
    image: str = option("", "image variant the stage runs in ('' for its component's own), e.g. recognize on "
                            "GPUs: {image: ocr-cuda, gpus: 1}")


def _stage(**kw: Any) -> Any:
    return dataclasses.field(default_factory=lambda: StageResources(**kw))


@dataclasses.dataclass
class KfpSettings:
    """The Kubeflow Pipelines the runs go to."""

    backend: str = option(backends.DEFAULT, "KFP backend version to compile for (2.5, 2.14, 2.15, 2.16, 2.17; a "
                                            "newer patch or minor runs under the nearest older one); inkbooth submit "
                                            "asks the server and compiles for its version")
    mode: Literal["standalone", "multi-user"] = option(
        "standalone", "standalone: KFP runs every workflow in its own namespace, whatever is asked; multi-user "
                      "(Kubeflow): in the profile namespace of the run's experiment")
    namespace: str = option("kubeflow", "where the runs execute: KFP's namespace (standalone) or your profile "
                                        "namespace (multi-user); the runner account, launcher settings and Secrets "
                                        "must be there (inkbooth manifests puts them there)")
    system_namespace: str = option("kubeflow", "where KFP itself runs (its API server and UI read the store)")


@dataclasses.dataclass
class StorageSettings:
    """The S3-compatible store the steps and KFP's launcher use; the keys stay in the Secret (or the identity)."""

    pipeline_root: str = option("s3://inkbooth-pipelines/v2/artifacts", "where KFP keeps the artifacts passed "
                                                                        "between steps (the launcher's default root)")
    endpoint: str = option("", "S3 endpoint URL ('' for AWS S3), e.g. https://storage.googleapis.com or "
                               "http://inkbooth-store.team-ml.svc.cluster.local:8333; with in_cluster, the in-cluster store's")
    region: str = option("", "region requests are signed for ('' for the SDK's default: AWS S3 needs the "
                             "bucket's region; GCS takes auto)")
    addressing_style: Literal["auto", "path", "virtual"] = option(
        "auto", "bucket in the path or in the host name (auto: path with a custom endpoint)")
    checksums: Literal["when_supported", "when_required"] = option(
        "when_supported", "when boto3 adds CRC checksums to requests: when_required for stores that reject "
                          "aws-chunked uploads (GCS); objects keep their SHA-256, checked on every read")
    in_cluster: bool = option(False, "run the in-cluster SeaweedFS (k8s/object-store) in the runs' namespace as the "
                                     "store (clusters without S3, e.g. AKS, on-prem); endpoint then defaults to it")

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The settings as the environment the steps read (through boto3; ``inkbooth.storage``), defaults left
        out; ``endpoint`` where it is not the configured one (the in-cluster store's)."""
        env = {}
        endpoint = self.endpoint if endpoint is None else endpoint
        if endpoint:
            env["AWS_ENDPOINT_URL_S3"] = endpoint
        if self.region:
            env["AWS_DEFAULT_REGION"] = self.region
        if self.checksums != "when_supported":
            env["AWS_REQUEST_CHECKSUM_CALCULATION"] = env["AWS_RESPONSE_CHECKSUM_VALIDATION"] = self.checksums
        if self.addressing_style != "auto":
            env["INKBOOTH_S3_ADDRESSING_STYLE"] = self.addressing_style
        return env

    def validate(self) -> None:
        if not self.pipeline_root.startswith("s3://") or len(self.pipeline_root) <= len("s3://"):
            raise ValueError(f"storage.pipeline_root: {self.pipeline_root!r} is not an s3:// URI")
        if self.endpoint and not re.match(r"^https?://[^/\s]+/?$", self.endpoint):
            raise ValueError(f"storage.endpoint: {self.endpoint!r} is not http(s)://host[:port]")


@dataclasses.dataclass
class ClusterConfig:
    """Per-stage Kubernetes settings of the pipelines, and run-wide ones."""

    pin_model: StageResources = _stage(cpu="500m", memory="1Gi", scratch="1Gi", timeout=600, retries=2)
    export_trocr: StageResources = _stage(cpu="2", memory="8Gi", scratch="20Gi", timeout=7200, retries=2,
                                          caching=True)
    plan_ocr: StageResources = _stage(cpu="1", memory="1Gi", scratch="1Gi", timeout=1800, retries=2)
    recognize: StageResources = _stage(cpu="4", memory="8Gi", scratch="10Gi", timeout=6 * 3600, retries=3,
                                       parallelism=8)
    merge_ocr: StageResources = _stage(cpu="1", memory="2Gi", scratch="4Gi", timeout=3600, retries=2)
    plan_prior: StageResources = _stage(cpu="500m", memory="512Mi", scratch="1Gi", timeout=600, caching=True)
    # SD 1.5 in fp32 with its class images and caches: ~10 GB on disk; training adds full-state
    # checkpoints staged locally (UNet, text encoder and AdamW moments: ~15 GB each).
    prior: StageResources = _stage(cpu="4", memory="16Gi", gpus=1, scratch="40Gi", timeout=4 * 3600, retries=2,
                                   parallelism=4)
    train: StageResources = _stage(cpu="8", memory="32Gi", gpus=1, shm="8Gi", scratch="100Gi", timeout=12 * 3600,
                                   retries=2, do_not_disrupt=True)
    # Sampling every kept step (25 prompts x 4 pictures, class pictures) and the base model: a GPU.
    evaluate_dreambooth: StageResources = _stage(cpu="4", memory="16Gi", gpus=1, scratch="60Gi", timeout=4 * 3600,
                                                 retries=2)
    export_model: StageResources = _stage(cpu="4", memory="16Gi", scratch="60Gi", timeout=2 * 3600, retries=2)
    # No caching: sample takes the registered version as a pointer artifact (lineage), which is not
    # in a cache key the way the version's URI was.
    sample: StageResources = _stage(cpu="4", memory="16Gi", gpus=1, scratch="40Gi", timeout=3600, retries=2)
    finish_run: StageResources = _stage(cpu="250m", memory="512Mi", scratch="1Gi", timeout=1800, retries=2)
    # ocr-train (it reuses pin_model, export_trocr and finish_run): labelled line crops are small, a
    # trocr-base fine-tuning run keeps full-state checkpoints (~1.3 GB each) staged locally.
    prepare_lines: StageResources = _stage(cpu="1", memory="2Gi", scratch="20Gi", timeout=3600, retries=2)
    finetune_trocr: StageResources = _stage(cpu="8", memory="32Gi", gpus=1, shm="8Gi", scratch="40Gi",
                                            timeout=12 * 3600, retries=2, do_not_disrupt=True)
    evaluate_ocr: StageResources = _stage(cpu="4", memory="8Gi", scratch="10Gi", timeout=3600, retries=2)
    register_ocr: StageResources = _stage(cpu="1", memory="2Gi", scratch="10Gi", timeout=1800, retries=2)
    credentials: Literal["secret", "workload-identity"] = option(
        "secret", "where the steps' S3 credentials come from: 'secret' (the s3_secret parameter's AWS_* keys "
                  "as env vars) or 'workload-identity' (no keys at all: the run's service account identity, "
                  "e.g. IRSA or EKS Pod Identity, through the SDK's default chain)")
    service_account: str = option("", "service account the runs use ('' for KFP's default); keyless "
                                      "credentials need one bound to a cloud identity, e.g. inkbooth-runner")
    ttl_seconds: int = option(3 * 86400, "seconds a finished run's workflow and pods are kept (0: forever)")
    deadline_seconds: int = option(2 * 86400, "seconds a run may take in all before it is stopped (0: none)")
    images: dict[str, str] = option({}, "image variant -> digest (sha256:...) or repository@sha256:...; the "
                                        "components then name their image by digest (make push-images writes these)")
    runner_annotations: dict[str, str] = option({}, "annotations of the runner service account that bind it to a "
                                                    "cloud identity, e.g. eks.amazonaws.com/role-arn (keyless)")
    registry: str = option(_image.REGISTRY, "registry the images are pulled from: the components name "
                                            "<registry>/inkbooth-<variant>:<version> (make push-images REGISTRY=...)")
    kfp: KfpSettings = option(None, "which KFP the runs go to: backend version, mode, namespace")
    storage: StorageSettings = option(None, "the object store's settings (not its keys)")
    model_registries: list[SinkConfig] = option([], "model registries every registered version also goes to "
                                                    "(inkbooth.sinks: type mlflow or kubeflow, uri, ...); a run's "
                                                    "own model_registries add to these")
    registry_secret: str = option("", "Secret the register steps read the model registries' tokens from: each key "
                                      "a sink's token_env, set as that environment variable ('' for none)")

    def __post_init__(self) -> None:
        self.kfp = nested(KfpSettings, self.kfp, source="kfp")
        self.storage = nested(StorageSettings, self.storage, source="storage")
        self.model_registries = parse(self.model_registries, source="model_registries")

    def stage(self, name: str) -> StageResources:
        return getattr(self, name)

    def stages(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.type in (StageResources, "StageResources")]

    def validate(self) -> None:
        for name in self.stages():
            s = self.stage(name)
            if s.caching and name not in CACHE_KEYS:
                raise ValueError(f"{name}.caching: this stage may not cache: its output depends on more than its "
                                 "inputs' names (stages that may: " + ", ".join(sorted(CACHE_KEYS)) + ")")
            if name in LOOP_STAGES and s.parallelism < 1:
                raise ValueError(f"{name}.parallelism must be at least 1: a bound keeps a big run from asking "
                                 "for one pod per shard at once")
            if name not in LOOP_STAGES and s.parallelism:
                raise ValueError(f"{name}.parallelism: only {', '.join(LOOP_STAGES)} run in parallel loops")
            if s.image and s.image not in _image.VARIANTS:
                raise ValueError(f"{name}.image: unknown image variant {s.image!r}; known: {', '.join(_image.VARIANTS)}")
            if min(s.timeout, s.retries, s.gpus) < 0:
                raise ValueError(f"{name}: timeout, retries and gpus must not be negative")
        if self.ttl_seconds < 0 or self.deadline_seconds < 0:
            raise ValueError("ttl_seconds and deadline_seconds must not be negative")
        for variant, pin in self.images.items():
            _image.by_digest(variant, pin, self.registry)
        if not re.match(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$", self.registry):
            raise ValueError(f"registry: {self.registry!r} is not a registry host with an optional path")
        try:
            backends.contract(self.kfp.backend)
        except ValueError as e:
            raise ValueError(f"kfp.backend: {e}") from None
        for key in ("namespace", "system_namespace"):
            if not _DNS_LABEL.match(getattr(self.kfp, key)):
                raise ValueError(f"kfp.{key}: {getattr(self.kfp, key)!r} is not a Kubernetes namespace name")
        self.storage.validate()
        parse(self.model_registries, source="model_registries")
        if self.registry_secret and not _DNS_LABEL.match(self.registry_secret):
            raise ValueError(f"registry_secret: {self.registry_secret!r} is not a Kubernetes Secret name")
        tokens = [s.label() for s in self.model_registries if s.token_env]
        if tokens and not self.registry_secret:
            raise ValueError(f"model_registries: {', '.join(tokens)} take a token from token_env: name the Secret "
                             "that holds it in registry_secret")

    def registry_sinks(self) -> list[dict[str, Any]]:
        """The model registries as the pipelines' ``model_registries`` parameter takes them."""
        from inkbooth.config import to_dict

        return [to_dict(s) for s in self.model_registries]

    def s3_endpoint(self) -> str:
        """The endpoint the steps and KFP's launcher reach the store at ('' for AWS S3)."""
        if self.storage.endpoint or not self.storage.in_cluster:
            return self.storage.endpoint
        return f"http://{STORE_SERVICE}.{self.kfp.namespace}.svc.cluster.local:{STORE_PORT}"

    def kfp_api(self) -> str:
        """KFP's API inside the cluster: the exit task asks it which tasks failed."""
        return f"http://ml-pipeline.{self.kfp.system_namespace}.svc.cluster.local:8888"

    def honours(self, feature: str) -> bool:
        """Whether the backend these settings compile for honours ``feature`` (``inkbooth.backends.FEATURES``)."""
        return backends.honours(self.kfp.backend, feature)

    def for_backend(self, version: str) -> ClusterConfig:
        """The same settings compiled for the backend ``version`` (e.g. the one a server reports)."""
        backends.contract(version)
        return dataclasses.replace(self, kfp=dataclasses.replace(self.kfp, backend=backends.name(version)))

    def retry_window(self, stage: str) -> int:
        """Seconds from a stage's first attempt in which Argo may still retry it: every attempt at its full
        timeout, the backoff waits between them and scheduling time (Argo kills an attempt at the window's end)."""
        r = self.stage(stage)
        attempt = (r.timeout or NO_TIMEOUT_WINDOW) + SCHEDULING_SLACK
        waits = sum(BACKOFF_SECONDS * BACKOFF_FACTOR ** i for i in range(r.retries))
        return (r.retries + 1) * attempt + waits

    def without_retries(self) -> ClusterConfig:
        """The same settings with no stage retried (local runs)."""
        return dataclasses.replace(self, **{name: dataclasses.replace(self.stage(name), retries=0)
                                            for name in self.stages()})

    def pipeline_config(self) -> Any:
        """Run-wide settings for ``dsl.pipeline(pipeline_config=...)``; None where the backend would drop
        the whole platform spec over them (``backends.FEATURES["pipeline_config"]``)."""
        from kfp import dsl

        if not self.honours("pipeline_config") or not (self.ttl_seconds or self.deadline_seconds):
            return None
        # After success and after failure too: KFP 2.17's stock Argo config sets both to an hour, and
        # Argo checks them before the one for completion (gccontroller/gc_controller.go:262-274).
        ttl = self.ttl_seconds or None
        return dsl.PipelineConfig(ttl_seconds_after_finished=ttl, ttl_seconds_after_success=ttl,
                                  ttl_seconds_after_failure=ttl, active_deadline_seconds=self.deadline_seconds or None)

    def apply(self, task: Any, stage: str, s3_secret: Any) -> Any:
        """Set ``stage``'s resources, placement, volumes, timeout, retries, caching and credentials on a task."""
        from kfp import kubernetes

        r = self.stage(stage)
        variant = r.image or _image.variant_of(task.container_spec.image)
        if variant in self.images:
            task.set_container_image(_image.by_digest(variant, self.images[variant], self.registry))
        elif r.image or (variant and self.registry != _image.REGISTRY):
            task.set_container_image(_image.image(variant, self.registry))
        task.set_cpu_request(r.cpu).set_memory_request(r.memory)
        if r.cpu_limit:
            task.set_cpu_limit(r.cpu_limit)
        memory_limit = r.memory_limit or (r.memory if r.gpus else "")
        if memory_limit:
            task.set_memory_limit(memory_limit)
        tolerations = list(r.tolerations)
        if r.gpus:
            task.set_accelerator_type(r.gpu_resource).set_accelerator_limit(r.gpus)
            if not any(t.key == r.gpu_resource for t in tolerations):
                tolerations.append(Toleration(key=r.gpu_resource))
        for key, value in sorted(r.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for t in tolerations:
            kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value or None,
                                      effect=t.effect or None)
        if r.shm:
            kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                       size_limit=r.shm)
        # /tmp as an emptyDir: the images run with a read-only root filesystem and keep their caches
        # (HOME, XDG_CACHE_HOME, HF_HOME, INKBOOTH_CACHE) under it. The size limit is what KFP's IR
        # can say about local disk (it has no ephemeral-storage request): above it the kubelet evicts.
        kubernetes.empty_dir_mount(task, volume_name="tmp", mount_path="/tmp", size_limit=r.scratch or None)
        if stage == "finish_run" and self.kfp.mode == "multi-user":
            # The profile's PodDefault (inkbooth manifests) mounts a token KFP's API accepts.
            kubernetes.add_pod_label(task, label_key=PIPELINES_ACCESS_LABEL, label_value="true")
        if self.honours("security_context"):
            kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID,
                                            run_as_non_root=True)
        if r.timeout:
            kubernetes.set_timeout(task, r.timeout)
        if r.do_not_disrupt:
            kubernetes.add_pod_annotation(task, annotation_key=DO_NOT_DISRUPT, annotation_value="true")
        if r.retries:
            task.set_retry(num_retries=r.retries, backoff_duration=f"{BACKOFF_SECONDS}s",
                           backoff_factor=float(BACKOFF_FACTOR), backoff_max_duration=f"{self.retry_window(stage)}s")
        task.set_caching_options(r.caching)
        storage_env = self.storage.env(self.s3_endpoint())
        for key, value in sorted(storage_env.items()):  # settings, not secrets: plain env on every backend
            task.set_env_variable(key, value)
        if self.credentials == "secret":
            # Credentials reach the step as environment variables from a Secret, never as parameters.
            kubernetes.use_secret_as_env(task, secret_name=s3_secret, secret_key_to_env={k: k for k in S3_KEYS})
            optional = [k for k in S3_OPTIONAL if k not in storage_env]
            if optional and self.honours("optional_secret_env"):
                kubernetes.use_secret_as_env(task, secret_name=s3_secret, secret_key_to_env={k: k for k in optional},
                                             optional=True)
        if stage in REGISTER_STAGES and self.registry_secret:
            # The sinks' tokens as the environment variables they name, from the Secret: never parameters.
            names = sorted({s.token_env for s in self.model_registries if s.token_env})
            if names:
                kubernetes.use_secret_as_env(task, secret_name=self.registry_secret,
                                             secret_key_to_env={n: n for n in names})
        return task

    def use_pdf_secret(self, task: Any, pdf_secret: Any) -> Any:
        """The PDF password, if the Secret named by ``pdf_secret`` exists, as ``INKBOOTH_PDF_PASSWORD``."""
        from kfp import kubernetes

        if self.honours("optional_secret_env"):  # else encrypted PDFs become records naming the missing password
            kubernetes.use_secret_as_env(task, secret_name=pdf_secret,
                                         secret_key_to_env={PDF_PASSWORD_KEY: PDF_PASSWORD_ENV}, optional=True)
        return task


def load(path: str | None) -> ClusterConfig:
    """The cluster settings in ``path`` (YAML), each stage merged field by field over its defaults."""
    from inkbooth import config

    return config.load(ClusterConfig, path) if path else ClusterConfig()
