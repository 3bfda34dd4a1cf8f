"""KFP component: export a TrOCR checkpoint to ONNX (fp32, INT8, FP16) behind a parity gate."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def export_trocr(model: str, config: dict, onnx_model: dsl.Output[dsl.Model]):
    """Export `model` (hub id, folder or s3://) to ONNX; fails, publishing nothing, below the parity thresholds."""
    from inkbooth import config as cfg
    from inkbooth.ocr.export import ExportConfig
    from inkbooth.ocr.export import export_trocr as stage

    manifest = stage(model, onnx_model.path, cfg.from_dict(ExportConfig, config, source="export config"))
    onnx_model.metadata.update({"content_hash": manifest.content_hash, **manifest.metrics})
