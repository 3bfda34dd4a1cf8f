"""KFP component: merge the shards' results and report throughput (and CER, given ground truth)."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def merge_ocr(
    output: str,
    ground_truth: str,
    recognize_config: dict,
    onnx_model: dsl.Input[dsl.Model],
    plan: dsl.Input[dsl.Dataset],
    summaries: dsl.Input[list[dsl.Dataset]],
    metrics: dsl.Output[dsl.Metrics],
    results: dsl.Output[dsl.Dataset],
    report: dsl.Output[dsl.HTML],
    report_md: dsl.Output[dsl.Markdown],
) -> str:
    """Publish `<output>/results` (results.jsonl, text/, report.json) and its report; returns the results' URI.

    `results` points to the published results; `report`/`report_md` are the visual report, also kept
    at `<output>/reports/`.
    """
    import json

    from inkbooth import artifacts, lineage, reports, storage
    from inkbooth.ocr.batch import RESULTS, merge_results, read_plan
    from inkbooth.reports import metrics as stage_metrics

    shard_summaries = []
    for s in summaries:
        with open(s.path) as f:
            shard_summaries.append(json.load(f))
    export = lineage.target(onnx_model)
    manifest = merge_results(
        read_plan(plan.path), output, ground_truth or None, shard_summaries,
        model_hash=artifacts.read_manifest(export).content_hash,
    )
    uri = storage.join(output, RESULTS)
    stage_metrics.log(metrics, stage_metrics.merge_metrics(manifest.metrics))
    lineage.point(results, uri, content_hash=manifest.content_hash)
    reports.for_run(uri, html=report.path, markdown=report_md.path, export_model=export,
                    recognize_config=recognize_config)
    return uri
