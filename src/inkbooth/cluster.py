"""Where the pipeline uses a component, how it runs on Kubernetes (kfp-kubernetes).

One typed ``ClusterConfig`` (YAML, see ``examples/cluster-*.yaml``) says per stage: CPU and memory,
GPU count and resource, node selector, tolerations, a memory-backed ``/dev/shm``, retries and
caching. ``inkbooth compile --cluster FILE`` bakes it into the IR; the S3 credentials Secret is a
pipeline parameter (``s3_secret``). Nothing here is read from the environment.

Caching defaults follow what a stage does: on where the output is a pure function of the inputs
and lives in KFP's own artifacts; off where a stage writes outside them (results, class-image sets,
the registry) or is not deterministic (training), because a cache hit would skip that work.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from inkbooth.config import option

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")


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
    retries: int = option(0, "retries (preemptible nodes)")
    caching: bool = option(True, "KFP caching")


def _stage(**kw: Any) -> Any:
    return dataclasses.field(default_factory=lambda: StageResources(**kw))


@dataclasses.dataclass
class ClusterConfig:
    """Per-stage Kubernetes settings of both pipelines."""

    export_trocr: StageResources = _stage(cpu="2", memory="8Gi", retries=2, caching=True)
    plan_ocr: StageResources = _stage(cpu="1", memory="1Gi", retries=2, caching=False)  # the listing changes
    recognize: StageResources = _stage(cpu="4", memory="8Gi", retries=3, caching=False)  # writes results
    merge_ocr: StageResources = _stage(cpu="1", memory="2Gi", retries=2, caching=False)  # writes results
    plan_prior: StageResources = _stage(cpu="500m", memory="512Mi", caching=True)
    prior: StageResources = _stage(cpu="4", memory="16Gi", gpus=1, retries=2, caching=False)  # writes sets
    train: StageResources = _stage(cpu="8", memory="32Gi", gpus=1, shm="8Gi", retries=2, caching=False)
    export_model: StageResources = _stage(cpu="4", memory="16Gi", retries=2, caching=False)  # registers
    sample: StageResources = _stage(cpu="4", memory="16Gi", gpus=1, retries=2, caching=True)

    def stage(self, name: str) -> StageResources:
        return getattr(self, name)


def apply(task: Any, resources: StageResources, s3_secret: Any) -> Any:
    """Set resources, placement, /dev/shm, retries, caching and S3 credentials on a pipeline task."""
    from kfp import kubernetes

    task.set_cpu_request(resources.cpu).set_memory_request(resources.memory)
    if resources.cpu_limit:
        task.set_cpu_limit(resources.cpu_limit)
    memory_limit = resources.memory_limit or (resources.memory if resources.gpus else "")
    if memory_limit:
        task.set_memory_limit(memory_limit)
    tolerations = list(resources.tolerations)
    if resources.gpus:
        task.set_accelerator_type(resources.gpu_resource).set_accelerator_limit(resources.gpus)
        if not any(t.key == resources.gpu_resource for t in tolerations):
            tolerations.append(Toleration(key=resources.gpu_resource))
    for key, value in sorted(resources.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value or None,
                                  effect=t.effect or None)
    if resources.shm:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=resources.shm)
    # /tmp as an emptyDir: the images can then run with a read-only root filesystem.
    kubernetes.empty_dir_mount(task, volume_name="tmp", mount_path="/tmp")
    if resources.retries:
        task.set_retry(num_retries=resources.retries, backoff_duration="30s", backoff_factor=2.0,
                       backoff_max_duration="600s")
    task.set_caching_options(resources.caching)
    # Credentials reach the step as environment variables from a Secret, never as parameters.
    kubernetes.use_secret_as_env(task, secret_name=s3_secret, secret_key_to_env={k: k for k in S3_ENV[:2]})
    kubernetes.use_secret_as_env(task, secret_name=s3_secret, secret_key_to_env={k: k for k in S3_ENV[2:]},
                                 optional=True)
    return task


def load(path: str | None) -> ClusterConfig:
    from inkbooth import config

    return config.load(ClusterConfig, path) if path else ClusterConfig()
