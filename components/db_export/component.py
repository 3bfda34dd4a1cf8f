"""KFP component: export the trained model and register it as a new version."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def export_model(trained: dsl.Input[dsl.Model], registry: str, config: dict, model: dsl.Output[dsl.Model],
                 model_registries: list = []) -> str:  # noqa: B006 - KFP takes parameter defaults from literals
    """Diffusers folder, single-file .safetensors, LoRA weights; `model` points to the registered version,
    whose URI is also returned. The version is also registered in each of `model_registries`
    (inkbooth.sinks.SinkConfig fields: MLflow, Kubeflow Model Registry)."""
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.dreambooth.export import ExportCheckpointConfig, export_checkpoint

    uri, manifest = export_checkpoint(trained.path, registry,
                                      cfg.from_dict(ExportCheckpointConfig, config, source="export config"),
                                      sinks=model_registries)
    lineage.point(model, uri, name=manifest.name, version=manifest.version, content_hash=manifest.content_hash)
    return uri
