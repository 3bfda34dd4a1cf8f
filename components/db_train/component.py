"""KFP component: DreamBooth fine-tuning with prior preservation."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def train(
    base_model: dsl.Input[dsl.Model],
    instance_images: dsl.Input[dsl.Dataset],
    class_sets: dsl.Input[list[dsl.Dataset]],
    checkpoints: str,
    config: dict,
    run_id: str,
    trained: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
):
    """Train on the subject images (one process per GPU of the node); `class_sets` point to the prior shards' set.

    Checkpoints go to `checkpoints`, or by default under the run's root on the store, so that a
    retried or preempted pod of this run resumes where the last one stopped. `report` shows the
    loss curve, the validation images and the class images.
    """
    from inkbooth import config as cfg
    from inkbooth import lineage, reports
    from inkbooth.dreambooth.prior import complete_set
    from inkbooth.dreambooth.train import TrainConfig, launch_training
    from inkbooth.lifecycle import own_checkpoints, resumable, run_checkpoints
    from inkbooth.reports import metrics as stage_metrics
    from inkbooth.reports.dreambooth import dreambooth_report

    own_checkpoints(run_id)
    manifest = launch_training(
        lineage.target(base_model), instance_images.uri, trained.path,
        cfg.from_dict(TrainConfig, resumable(config), source="train config"),
        class_images=complete_set([lineage.target(s) for s in class_sets]),
        checkpoints=checkpoints or run_checkpoints(trained.uri, run_id),
    )
    trained.metadata.update(manifest.metrics)
    stage_metrics.log(metrics, stage_metrics.train_metrics(manifest.metrics))
    reports.write_outputs(dreambooth_report(trained.path, title="DreamBooth training"), html=report.path)
