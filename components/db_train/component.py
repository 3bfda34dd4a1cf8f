"""KFP component: DreamBooth fine-tuning with prior preservation."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def train(
    base_model: str,
    instance_images: str,
    class_sets: list,
    checkpoints: str,
    config: dict,
    run_id: str,
    trained: dsl.Output[dsl.Model],
):
    """Train on the subject images (one process per GPU of the node); `class_sets` are the prior shards' outputs.

    Checkpoints go to `checkpoints`, or by default under the run's root on the store, so that a
    retried or preempted pod of this run resumes where the last one stopped.
    """
    from inkbooth import config as cfg
    from inkbooth.dreambooth.prior import complete_set
    from inkbooth.dreambooth.train import TrainConfig, launch_training
    from inkbooth.lifecycle import resumable, run_checkpoints

    manifest = launch_training(
        base_model, instance_images, trained.path,
        cfg.from_dict(TrainConfig, resumable(config), source="train config"),
        class_images=complete_set(class_sets), checkpoints=checkpoints or run_checkpoints(trained.uri, run_id),
    )
    trained.metadata.update(manifest.metrics)
