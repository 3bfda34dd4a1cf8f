"""KFP component: register the fine-tuned checkpoint as the next version of a model."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def register(trained: dsl.Input[dsl.Model], onnx_model: dsl.Input[dsl.Model], evaluation: dsl.Input[dsl.Dataset],
             registry: str, config: dict, model: dsl.Output[dsl.Model],
             model_registries: list = []) -> str:  # noqa: B006 - KFP takes parameter defaults from literals
    """The new version (lineage: base checkpoint, data hash, config; metrics: held-out and parity).

    `model` points to the registered version, whose URI is also returned. The version is also
    registered in each of `model_registries` (inkbooth.sinks.SinkConfig fields).
    """
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.ocr.finetune import RegisterConfig, register_trocr

    uri, manifest = register_trocr(trained.path, registry, cfg.from_dict(RegisterConfig, config,
                                                                         source="register config"),
                                   onnx_model=lineage.target(onnx_model), evaluation=evaluation.path,
                                   sinks=model_registries)
    lineage.point(model, uri, name=manifest.name, version=manifest.version, content_hash=manifest.content_hash)
    return uri
