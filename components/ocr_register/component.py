"""KFP component: register the fine-tuned checkpoint as the next version of a model."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def register(trained: dsl.Input[dsl.Model], onnx_model: dsl.Input[dsl.Model], evaluation: dsl.Input[dsl.Dataset],
             registry: str, config: dict, model: dsl.Output[dsl.Model]) -> str:
    """The new version (lineage: base checkpoint, data hash, config; metrics: held-out and parity).

    `model` points to the registered version, whose URI is also returned.
    """
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.ocr.finetune import RegisterConfig, register_trocr

    uri, manifest = register_trocr(trained.path, registry, cfg.from_dict(RegisterConfig, config,
                                                                         source="register config"),
                                   onnx_model=lineage.target(onnx_model), evaluation=evaluation.path)
    lineage.point(model, uri, name=manifest.name, version=manifest.version, content_hash=manifest.content_hash)
    return uri
