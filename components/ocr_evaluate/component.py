"""KFP component: read the held-out lines with the exported model, each variant."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def evaluate(onnx_model: dsl.Input[dsl.Model], trained: dsl.Input[dsl.Model], lines: dsl.Input[dsl.Dataset],
             config: dict, evaluation: dsl.Output[dsl.Dataset], metrics: dsl.Output[dsl.Metrics]):
    """CER and WER of every variant on the held-out lines, and the INT8 - fp32 CER delta."""
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.ocr.evaluate import EvaluateConfig, evaluate_trocr
    from inkbooth.reports import metrics as stage_metrics

    manifest = evaluate_trocr(lineage.target(onnx_model), trained.path, evaluation.path,
                              cfg.from_dict(EvaluateConfig, config, source="evaluate config"), lines=lines.path)
    stage_metrics.log(metrics, stage_metrics.evaluate_metrics(manifest.metrics))
