"""KFP component: one shard of the class (prior) images, content-keyed and reused across runs."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def generate_prior(base_model: dsl.Input[dsl.Model], prior_output: str, shard: str, config: dict,
                   class_images: dsl.Output[dsl.Dataset], metrics: dsl.Output[dsl.Metrics]):
    """Make this shard's missing class images under `prior_output`; `class_images` points to the set."""
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.dreambooth.prior import PriorConfig, generate_prior_images
    from inkbooth.reports import metrics as stage_metrics

    result = generate_prior_images(lineage.target(base_model), prior_output,
                                   cfg.from_dict(PriorConfig, config, source="prior config"), shard=shard)
    print(result)
    lineage.point(class_images, result["uri"], key=result["key"], shard=shard, complete=result["complete"])
    stage_metrics.log(metrics, stage_metrics.prior_metrics(result))
