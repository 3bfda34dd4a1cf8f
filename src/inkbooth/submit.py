"""Runs on a Kubeflow Pipelines cluster: submit one, schedule recurring ones, retrain on change.

The pipeline is compiled here (with the cluster settings, ``inkbooth.cluster``) and sent with the
kfp client to a KFP v2 endpoint. The S3 credentials never travel with it: the steps read them from
the Kubernetes Secret named by ``s3_secret``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from inkbooth import cluster, runs, storage
from inkbooth.config import option

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Endpoint:
    """Where and as whom runs are submitted."""

    host: str = option(help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    namespace: str = option("", "profile namespace (multi-user KFP); '' for standalone")
    experiment: str = option("inkbooth", "experiment the runs are filed under")
    cluster: str = option("", "ClusterConfig YAML (per-stage resources, GPUs, node selectors); '' for defaults")
    s3_secret: str = option("inkbooth-s3", "Kubernetes Secret with the AWS_* keys the steps read")
    service_account: str = option("", "service account the run's pods use ('' for KFP's default)")
    pipeline_root: str = option("", "s3:// pipeline root ('' for the kfp-launcher ConfigMap's default)")
    token: str = option("", "bearer token for the KFP API ('' for none)")


def _client(endpoint: Endpoint) -> Any:
    import kfp

    return kfp.Client(host=endpoint.host, namespace=endpoint.namespace or "kubeflow",
                      existing_token=endpoint.token or None)


def _package(name: str, endpoint: Endpoint, folder: str) -> str:
    path = Path(folder) / runs.get(name).yaml
    runs.compile_pipeline(name, path, cluster.load(endpoint.cluster or None))
    return str(path)


def _arguments(run: Any, endpoint: Endpoint) -> dict[str, Any]:
    run.validate()
    args = run.arguments()
    for key, value in args.items():
        if isinstance(value, str) and value.startswith("/"):
            raise ValueError(f"{key} = {value!r} is a local path; a cluster run needs s3:// URIs (or hub ids)")
    return {**args, "s3_secret": endpoint.s3_secret}


def submit(name: str, run: Any, endpoint: Endpoint, run_name: str | None = None) -> str:
    """Compile and submit one run of pipeline ``name``; returns the run id."""
    client = _client(endpoint)
    with storage.temp_dir("inkbooth-submit-") as tmp:
        result = client.create_run_from_pipeline_package(
            _package(name, endpoint, tmp), arguments=_arguments(run, endpoint), run_name=run_name,
            experiment_name=endpoint.experiment, namespace=endpoint.namespace or None,
            pipeline_root=endpoint.pipeline_root or None, service_account=endpoint.service_account or None,
        )
    log.info("submitted %s run %s to %s", name, result.run_id, endpoint.host)
    return result.run_id


def schedule(name: str, run: Any, endpoint: Endpoint, *, job_name: str, cron: str,
             max_concurrency: int = 1) -> str:
    """A recurring run of pipeline ``name`` on a cron schedule; returns the recurring run id."""
    if len(cron.split()) not in (5, 6):
        raise ValueError(f"cron {cron!r}: expected 5 or 6 fields, e.g. '0 0 3 * * *' (KFP uses seconds first)")
    client = _client(endpoint)
    experiment = _experiment_id(client, endpoint)
    with storage.temp_dir("inkbooth-schedule-") as tmp:
        recurring = client.create_recurring_run(
            experiment_id=experiment, job_name=job_name, cron_expression=cron, max_concurrency=max_concurrency,
            params=_arguments(run, endpoint), pipeline_package_path=_package(name, endpoint, tmp),
            pipeline_root=endpoint.pipeline_root or None, service_account=endpoint.service_account or None,
            no_catchup=True,
        )
    log.info("scheduled %s as %s (%s)", name, job_name, cron)
    return recurring.recurring_run_id


def _experiment_id(client: Any, endpoint: Endpoint) -> str:
    namespace = endpoint.namespace or None
    try:
        return client.get_experiment(experiment_name=endpoint.experiment, namespace=namespace).experiment_id
    except ValueError:
        return client.create_experiment(endpoint.experiment, namespace=namespace).experiment_id


def retrain_if_changed(run: runs.DreamBoothRun, endpoint: Endpoint) -> dict[str, Any]:
    """Submit a DreamBooth run only when the subject images differ from the latest version's.

    The subject-image prefix is hashed as training hashes it (distinct image contents); the latest
    version of the model in the registry records that hash in its lineage.
    """
    from inkbooth import artifacts
    from inkbooth.dreambooth.export import ExportCheckpointConfig
    from inkbooth.dreambooth.train import image_set_hash

    name = ExportCheckpointConfig(**run.export).name if run.export else ExportCheckpointConfig().name
    current = image_set_hash(run.instance_images)
    registry = artifacts.Registry(run.registry)
    try:
        latest = registry.manifest(name, "latest")
        trained_on = latest.lineage.get("instance_images_hash")
        version = latest.version
    except artifacts.NotPublishedError:
        trained_on, version = None, None
    if trained_on == current:
        return {"submitted": False, "reason": f"subject images unchanged since {name} {version}", "hash": current}
    run_id = submit("dreambooth", run, endpoint, run_name=f"retrain-{name}-{current[:8]}")
    reason = f"no version of {name} yet" if version is None else f"subject images changed since {name} {version}"
    return {"submitted": True, "run_id": run_id, "reason": reason, "hash": current}
