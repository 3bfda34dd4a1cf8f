"""KFP component: export a TrOCR checkpoint to ONNX (fp32, INT8, FP16) behind a parity gate."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def export_trocr(model: str, model_key: str, config: dict, onnx_model: dsl.Output[dsl.Model],
                 metrics: dsl.Output[dsl.Metrics], parity: dsl.Output[dsl.Markdown], parity_images: str = ""):
    """Export `model` (hub id, folder or s3://) to ONNX; fails, publishing nothing, below the parity thresholds.

    `metrics` holds the parity numbers, sizes and the gate's verdict, `parity` the parity table.
    `parity_images` (a prefix of line images, with a label file to know their texts) replaces the
    rendered parity set.

    `model_key` is the model's fingerprint (pin_model): it puts the model's content in the cache key,
    and the export refuses a model that changed since it was taken.
    """
    from inkbooth import config as cfg
    from inkbooth import reports
    from inkbooth.models import require_fingerprint
    from inkbooth.ocr.export import ExportConfig
    from inkbooth.ocr.export import export_trocr as stage
    from inkbooth.reports import metrics as stage_metrics
    from inkbooth.reports.ocr import export_report

    require_fingerprint(model, model_key)
    manifest = stage(model, onnx_model.path, cfg.from_dict(ExportConfig, config, source="export config"),
                     parity_images=parity_images or None)
    onnx_model.metadata.update({"content_hash": manifest.content_hash, "model_key": model_key, **manifest.metrics})
    stage_metrics.log(metrics, stage_metrics.export_metrics(manifest.metrics))
    reports.write_outputs(export_report(onnx_model.path), markdown=parity.path)
