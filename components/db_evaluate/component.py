"""KFP component: judge every kept step of a DreamBooth run and choose the one to register."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def evaluate_dreambooth(trained: dsl.Input[dsl.Model], config: dict, evaluation: dsl.Output[dsl.Artifact],
                        metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML]):
    """DINO, CLIP-I, CLIP-T and class preservation of the base model and of every step `trained` kept,
    with grids; `evaluation` names the step selected (config `select`) and why, and the export registers it."""
    from inkbooth import config as cfg
    from inkbooth import reports
    from inkbooth.dreambooth.evaluate import EvaluateConfig, evaluate_dreambooth
    from inkbooth.reports import metrics as stage_metrics
    from inkbooth.reports.dreambooth import evaluation_report

    manifest = evaluate_dreambooth(trained.path, evaluation.path,
                                   cfg.from_dict(EvaluateConfig, config, source="evaluate config"))
    evaluation.metadata.update(manifest.metrics)
    stage_metrics.log(metrics, stage_metrics.dreambooth_evaluate_metrics(manifest.metrics))
    reports.write_outputs(evaluation_report(evaluation.path), html=report.path)
