"""KFP component: the shard specs for class-image generation."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def plan_prior(num_shards: int) -> list:
    """["0/n", ..., "n-1/n"] for ParallelFor."""
    from inkbooth.shards import specs

    return specs(num_shards)
