"""KFP component: the exit task of both pipelines (dsl.ExitHandler): how the run ended, and its partial work removed."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def finish_run(
    status: dsl.PipelineTaskFinalStatus,
    run_id: str,
    kfp_api: str,
    checkpoints: str,
    clean_checkpoints: bool,
    outcome: dsl.Output[dsl.Artifact],
):
    """Name the failed tasks (asked of `kfp_api`), drop torn checkpoints, and a succeeded run's own ones."""
    from inkbooth.lifecycle import finish_run as finish

    report = finish({"state": status.state, "error": {"message": status.error_message}}, run_id, outcome.uri,
                    outcome.path, kfp_api=kfp_api, checkpoints=checkpoints, clean_checkpoints=clean_checkpoints)
    outcome.metadata.update({"state": report["state"], "failed_tasks": [t["task"] for t in report["failed_tasks"]]})
