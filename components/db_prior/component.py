"""KFP component: one shard of the class (prior) images, content-keyed and reused across runs."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def generate_prior(base_model: str, prior_output: str, shard: str, config: dict) -> str:
    """Make this shard's missing class images under `prior_output`; returns the set's URI."""
    from inkbooth import config as cfg
    from inkbooth.dreambooth.prior import PriorConfig, generate_prior_images

    result = generate_prior_images(base_model, prior_output, cfg.from_dict(PriorConfig, config, source="prior config"),
                                   shard=shard)
    print(result)
    return result["uri"]
