"""Steps every pipeline starts the same way: the exit task, the pinned base model, imported inputs."""

from kfp import dsl

from inkbooth.cluster import ClusterConfig
from inkbooth.components.finish_run.component import finish_run
from inkbooth.components.pin_model.component import pin_model


def exit_task(cluster: ClusterConfig, *, kfp_api, checkpoints, clean_checkpoints: bool, s3_secret):
    """The task a pipeline's ``dsl.ExitHandler`` runs last, however the run ended."""
    finish = cluster.apply(finish_run(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, kfp_api=kfp_api, checkpoints=checkpoints,
                                      clean_checkpoints=clean_checkpoints), "finish_run", s3_secret)
    finish.set_display_name("finish-run")
    return finish


def pinned_model(cluster: ClusterConfig, model, s3_secret, display_name: str):
    """The base model as a pointer with its fingerprint (a hub id cannot be imported as an artifact)."""
    pinned = cluster.apply(pin_model(model=model), "pin_model", s3_secret)
    pinned.set_display_name(display_name)
    return pinned


def imported_dataset(uri, role: str, display_name: str):
    """A dataset from outside the run, imported where it is, for ML Metadata's lineage."""
    task = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, reimport=True, metadata={"role": role})
    task.set_display_name(display_name)
    return task
