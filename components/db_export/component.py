"""KFP component: export the trained model and register it as a new version."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def export_model(trained: dsl.Input[dsl.Model], registry: str, config: dict) -> str:
    """Diffusers folder, single-file .safetensors, LoRA weights; returns the registry version URI."""
    from inkbooth import config as cfg
    from inkbooth.dreambooth.export import ExportCheckpointConfig, export_checkpoint

    uri, _ = export_checkpoint(trained.path, registry, cfg.from_dict(ExportCheckpointConfig, config,
                                                                      source="export config"))
    return uri
