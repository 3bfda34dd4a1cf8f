"""Runs on a Kubeflow Pipelines cluster: submit one, schedule recurring ones, retrain when the data changes.

The pipeline is compiled here (with the cluster settings, ``inkbooth.cluster``) for the backend the
endpoint reports (``inkbooth.backends``: only what that version honours goes in the IR) and sent
with the kfp client to a KFP v2 endpoint; a backend older than inkbooth supports is refused. The S3 credentials never travel with it: the steps read them
from the Kubernetes Secret named by ``s3_secret``, or (keyless) from the run's service account.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from inkbooth import backends, cluster, runs, storage
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
    pipeline_root: str = option("", "s3:// pipeline root ('' for storage.pipeline_root of the cluster file)")
    token: str = option("", "bearer token for the KFP API ('' for none)")


class BackendTooOldError(RuntimeError):
    """The KFP backend behind an endpoint is older than any inkbooth compiles for."""


def _client(endpoint: Endpoint) -> Any:
    import kfp

    return kfp.Client(host=endpoint.host, namespace=endpoint.namespace or "kubeflow",
                      existing_token=endpoint.token or None)


def _namespace(endpoint: Endpoint, settings: cluster.ClusterConfig) -> str | None:
    """The profile namespace runs are filed under (multi-user); None for standalone KFP."""
    if endpoint.namespace:
        return endpoint.namespace
    return settings.kfp.namespace if settings.kfp.mode == "multi-user" else None


def backend_version(client: Any) -> str:
    """The KFP backend's version (``tag_name`` of its healthz; the generated client drops that field)."""
    response = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    return str(json.loads(response.data or b"{}").get("tag_name") or "unknown")


def check_backend(client: Any, settings: cluster.ClusterConfig, host: str) -> cluster.ClusterConfig:
    """The settings compiled for the backend ``host`` runs (refused when older than inkbooth supports)."""
    version = backend_version(client)
    try:
        backends.parse(version)
    except ValueError:
        log.warning("%s: KFP backend version %r unknown; compiling for %s (kfp.backend of the cluster file)",
                    host, version, settings.kfp.backend)
        return settings
    try:
        contract = backends.name(version)
    except ValueError as e:
        raise BackendTooOldError(f"{host}: {e}. Upgrade the KFP backend") from None
    if contract != backends.name(settings.kfp.backend):
        left_out = backends.left_out(settings.kfp.backend, version)
        log.warning("%s runs KFP %s: compiling for %s instead of %s%s", host, version, contract,
                    settings.kfp.backend, f" (left out: {'; '.join(left_out)})" if left_out else "")
    return settings.for_backend(version)


def _settings(endpoint: Endpoint) -> cluster.ClusterConfig:
    settings = cluster.load(endpoint.cluster or None)
    if settings.credentials == "workload-identity" and not (endpoint.service_account or settings.service_account):
        raise ValueError("credentials: workload-identity needs the run's service account bound to a cloud identity "
                         "(--service-account, or service_account in the cluster file), e.g. inkbooth-runner "
                         "from examples/cluster-eks.yaml (inkbooth manifests binds it to the IAM role)")
    return settings


def _service_account(endpoint: Endpoint, settings: cluster.ClusterConfig) -> str | None:
    return endpoint.service_account or settings.service_account or None


def _package(name: str, settings: cluster.ClusterConfig, folder: str) -> str:
    path = Path(folder) / runs.get(name).yaml
    runs.compile_pipeline(name, path, settings)
    return str(path)


def _with_sinks(settings: cluster.ClusterConfig, run: Any) -> cluster.ClusterConfig:
    """The settings to compile with: the run's model registries join the cluster file's (so the register
    steps also get the tokens of the run's sinks from registry_secret)."""
    from inkbooth import sinks

    if not hasattr(run, "model_registries"):
        return settings
    merged = dataclasses.replace(settings, model_registries=sinks.combine(settings.model_registries,
                                                                          run.model_registries))
    merged.validate()
    return merged


def _arguments(run: Any, endpoint: Endpoint, settings: cluster.ClusterConfig | None = None) -> dict[str, Any]:
    """The run's pipeline arguments; with ``settings``, the model registries are theirs (``_with_sinks``)."""
    run.validate()
    args = run.arguments()
    for key, value in args.items():
        if isinstance(value, str) and value.startswith("/"):
            raise ValueError(f"{key} = {value!r} is a local path; a cluster run needs s3:// URIs (or hub ids)")
    if settings is not None and "model_registries" in args:
        args["model_registries"] = settings.registry_sinks()
    return {**args, "s3_secret": endpoint.s3_secret}


def submit(name: str, run: Any, endpoint: Endpoint, run_name: str | None = None) -> str:
    """Compile and submit one run of pipeline ``name``; returns the run id."""
    settings = _with_sinks(_settings(endpoint), run)
    arguments = _arguments(run, endpoint, settings)
    client = _client(endpoint)
    settings = check_backend(client, settings, endpoint.host)
    with storage.temp_dir("inkbooth-submit-") as tmp:
        result = client.create_run_from_pipeline_package(
            _package(name, settings, tmp), arguments=arguments, run_name=run_name,
            experiment_name=endpoint.experiment, namespace=_namespace(endpoint, settings),
            pipeline_root=endpoint.pipeline_root or settings.storage.pipeline_root, service_account=_service_account(endpoint, settings),
        )
    log.info("submitted %s run %s to %s", name, result.run_id, endpoint.host)
    return result.run_id


def schedule(name: str, run: Any, endpoint: Endpoint, *, job_name: str, cron: str,
             max_concurrency: int = 1) -> str:
    """A recurring run of pipeline ``name`` on a cron schedule; returns the recurring run id."""
    if len(cron.split()) not in (5, 6):
        raise ValueError(f"cron {cron!r}: expected 5 or 6 fields, e.g. '0 0 3 * * *' (KFP uses seconds first)")
    settings = _with_sinks(_settings(endpoint), run)
    arguments = _arguments(run, endpoint, settings)
    client = _client(endpoint)
    settings = check_backend(client, settings, endpoint.host)
    experiment = _experiment_id(client, endpoint, settings)
    with storage.temp_dir("inkbooth-schedule-") as tmp:
        recurring = client.create_recurring_run(
            experiment_id=experiment, job_name=job_name, cron_expression=cron, max_concurrency=max_concurrency,
            params=arguments, pipeline_package_path=_package(name, settings, tmp),
            pipeline_root=endpoint.pipeline_root or settings.storage.pipeline_root, service_account=_service_account(endpoint, settings),
            no_catchup=True,
        )
    log.info("scheduled %s as %s (%s)", name, job_name, cron)
    return recurring.recurring_run_id


def _experiment_id(client: Any, endpoint: Endpoint, settings: cluster.ClusterConfig) -> str:
    namespace = _namespace(endpoint, settings)
    try:
        return client.get_experiment(experiment_name=endpoint.experiment, namespace=namespace).experiment_id
    except ValueError:
        return client.create_experiment(endpoint.experiment, namespace=namespace).experiment_id


def _training_data(run: runs.DreamBoothRun | runs.OCRTrainRun) -> tuple[str, str, str, str, str]:
    """(pipeline, model name, data hash now, lineage key holding the trained-on hash, what the data is).

    The hash is computed as training computes it, from recorded checksums (nothing is downloaded).
    """
    if isinstance(run, runs.OCRTrainRun):
        from inkbooth.ocr.training.lines import line_data_hash
        from inkbooth.ocr.training.register import RegisterConfig

        if run.pdfs:
            # The trained-on hash of such a run is its pdf-lines output's, which cannot be computed
            # from the PDFs without making the lines: refuse rather than retrain on every call.
            raise ValueError("retrain compares labelled lines (data:); a run that makes its lines from PDFs "
                             "(pdfs:) cannot be compared yet: schedule it (inkbooth schedule) instead")
        return "ocr-train", RegisterConfig(**run.register).name, line_data_hash(run.data), "data_hash", "labelled lines"
    from inkbooth.dreambooth.export import ExportCheckpointConfig
    from inkbooth.dreambooth.train import image_set_hash

    name = ExportCheckpointConfig(**run.export).name if run.export else ExportCheckpointConfig().name
    return "dreambooth", name, image_set_hash(run.instance_images), "instance_images_hash", "subject images"


def retrain_if_changed(run: runs.DreamBoothRun | runs.OCRTrainRun, endpoint: Endpoint) -> dict[str, Any]:
    """Submit a training run only when its data differs from what the latest version was trained on.

    DreamBooth compares the subject images, OCR training the labelled lines (label file and images);
    the latest version of the model in the registry records that hash in its lineage. The answer
    names the latest version and, for an evaluated DreamBooth version, the training step it is and why
    that step was chosen (``latest``).
    """
    from inkbooth import artifacts

    pipeline, name, current, key, what = _training_data(run)
    registry = artifacts.Registry(run.registry)
    try:
        latest = registry.manifest(name, "latest")
        trained_on = latest.lineage.get(key)
        version = latest.version
        shown = {"latest": {"version": version, **{k: latest.lineage[k] for k in ("selected_step", "selection")
                                                   if k in latest.lineage}}}
    except artifacts.NotPublishedError:
        trained_on, version, shown = None, None, {}
    if trained_on == current:
        return {"submitted": False, "reason": f"{what} unchanged since {name} {version}", "hash": current, **shown}
    run_id = submit(pipeline, run, endpoint, run_name=f"retrain-{name}-{current[:8]}")
    reason = f"no version of {name} yet" if version is None else f"{what} changed since {name} {version}"
    return {"submitted": True, "run_id": run_id, "reason": reason, "hash": current, **shown}
