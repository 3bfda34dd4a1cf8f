"""KFP component: export the trained model and register it as a new version."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def export_model(trained: dsl.Input[dsl.Model], evaluation: dsl.Input[dsl.Artifact], registry: str, config: dict,
                 model: dsl.Output[dsl.Model],
                 model_registries: list = []) -> str:  # noqa: B006 - KFP takes parameter defaults from literals
    """The step `evaluation` selected (the last, or the best by its config), as diffusers folder, single-file
    .safetensors and LoRA weights, with the evaluation's figures and grids; `model` points to the registered version,
    whose URI is also returned. The version is also registered in each of `model_registries`
    (inkbooth.sinks.SinkConfig fields: MLflow, Kubeflow Model Registry)."""
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.dreambooth.export import ExportCheckpointConfig, export_checkpoint

    uri, manifest = export_checkpoint(trained.path, registry,
                                      cfg.from_dict(ExportCheckpointConfig, config, source="export config"),
                                      sinks=model_registries, evaluation=evaluation.path)
    lineage.point(model, uri, name=manifest.name, version=manifest.version, content_hash=manifest.content_hash)
    return uri
