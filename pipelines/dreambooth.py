"""The DreamBooth pipeline: class images (parallel shards) -> fine-tuning -> export and register -> samples."""

from kfp import dsl

from inkbooth.components.db_export.component import export_model
from inkbooth.components.db_plan.component import plan_prior
from inkbooth.components.db_prior.component import generate_prior
from inkbooth.components.db_sample.component import sample_model
from inkbooth.components.db_train.component import train


@dsl.pipeline(name="inkbooth-dreambooth",
              description="DreamBooth: prior images, fine-tuning, export to diffusers and single-file, sampling")
def dreambooth_pipeline(
    base_model: str,
    instance_images: str,
    prior_output: str,
    registry: str,
    checkpoints: str = "",
    prior_shards: int = 2,
    prior_config: dict = {},  # noqa: B006 - KFP takes parameter defaults from literals
    train_config: dict = {},  # noqa: B006
    export_config: dict = {},  # noqa: B006
    sample_config: dict = {},  # noqa: B006
) -> str:
    plan = plan_prior(num_shards=prior_shards).set_display_name("plan-prior-shards")
    with dsl.ParallelFor(items=plan.output) as shard:
        prior = generate_prior(base_model=base_model, prior_output=prior_output, shard=shard,
                               config=prior_config).set_display_name("class-images")
    trained = train(base_model=base_model, instance_images=instance_images,
                    class_sets=dsl.Collected(prior.output), checkpoints=checkpoints,
                    config=train_config).set_display_name("fine-tune")
    exported = export_model(trained=trained.outputs["trained"], registry=registry,
                            config=export_config).set_display_name("export-and-register")
    sample_model(model=exported.output, config=sample_config).set_display_name("sample")
    return exported.output
