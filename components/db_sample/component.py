"""KFP component: sample images from a registered model version."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def sample_model(model: dsl.Input[dsl.Model], config: dict, samples: dsl.Output[dsl.Artifact],
                 metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML], report_md: dsl.Output[dsl.Markdown]):
    """Images for the configured prompts and a grid (grid.png) in `samples`, from the version `model` points
    to; `report` is the version's report (samples, loss, validation, class images), also kept beside it."""
    from inkbooth import config as cfg
    from inkbooth import lineage, reports
    from inkbooth.dreambooth.sample import SampleConfig, sample
    from inkbooth.reports import metrics as stage_metrics

    version = lineage.target(model)
    manifest = sample(version, samples.path, cfg.from_dict(SampleConfig, config, source="sample config"))
    samples.metadata.update({"model": version, **manifest.metrics})
    stage_metrics.log(metrics, stage_metrics.sample_metrics(manifest.metrics))
    reports.for_run(version, html=report.path, markdown=report_md.path, samples=samples.path)
