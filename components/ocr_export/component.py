"""KFP component: export a TrOCR checkpoint to ONNX (fp32, INT8, FP16) behind a parity gate."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def export_trocr(model_key: str, config: dict, onnx_model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics],
                 parity: dsl.Output[dsl.Markdown], model: str = "", trained: dsl.Input[dsl.Model] = None,
                 parity_lines: dsl.Input[dsl.Dataset] = None):
    """Export `model` (hub id, folder or s3://), or the checkpoint `trained` made in this run, to ONNX.

    Fails, publishing nothing, below the parity thresholds. `onnx_model` points to the export, published
    beside it (a reader fetches only the variant it runs). `metrics` holds the parity numbers, sizes
    and the gate's verdict, `parity` the parity table. `parity_lines` (line images with a label file,
    as a prepared line set) replaces the rendered parity set.

    `model_key` is the model's fingerprint (pin_model, or the fine-tuning stage): it puts the model's
    content in the cache key, and the export refuses a model that changed since it was taken.
    """
    from inkbooth import config as cfg
    from inkbooth import lineage, reports
    from inkbooth.models import require_fingerprint
    from inkbooth.ocr.export import ExportConfig
    from inkbooth.ocr.export import export_trocr as stage
    from inkbooth.reports import metrics as stage_metrics
    from inkbooth.reports.ocr import export_report

    source = lineage.location(trained) if trained is not None else model
    if not source:
        raise ValueError("export_trocr: give `model` (hub id, folder or s3://) or a `trained` checkpoint artifact")
    require_fingerprint(source, model_key)
    export = lineage.beside(onnx_model, "export")
    manifest = stage(source, export, cfg.from_dict(ExportConfig, config, source="export config"),
                     parity_images=lineage.location(parity_lines) if parity_lines is not None else None)
    lineage.point(onnx_model, export, content_hash=manifest.content_hash, model_key=model_key)
    onnx_model.metadata.update(manifest.metrics)
    stage_metrics.log(metrics, stage_metrics.export_metrics(manifest.metrics))
    reports.write_outputs(export_report(export), markdown=parity.path)
