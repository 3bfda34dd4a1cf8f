"""KFP component: sample images from a registered model version."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def sample_model(model: str, config: dict, samples: dsl.Output[dsl.Artifact]):
    """Images for the configured prompts and a grid (grid.png) in `samples`."""
    from inkbooth import config as cfg
    from inkbooth.dreambooth.sample import SampleConfig, sample

    manifest = sample(model, samples.path, cfg.from_dict(SampleConfig, config, source="sample config"))
    samples.metadata.update({"model": model, **manifest.metrics})
