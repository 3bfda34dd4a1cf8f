"""KFP component: merge the shards' results and report throughput (and CER, given ground truth)."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def merge_ocr(
    output: str,
    ground_truth: str,
    onnx_model: dsl.Input[dsl.Model],
    plan: dsl.Input[dsl.Dataset],
    summaries: dsl.Input[list[dsl.Dataset]],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Publish `<output>/results` (results.jsonl, text/, report.json); returns its URI."""
    import json

    from inkbooth import artifacts, storage
    from inkbooth.ocr.batch import RESULTS, merge_results, read_plan

    shard_summaries = []
    for s in summaries:
        with open(s.path) as f:
            shard_summaries.append(json.load(f))
    manifest = merge_results(
        read_plan(plan.path), output, ground_truth or None, shard_summaries,
        model_hash=artifacts.read_manifest(onnx_model.path).content_hash,
    )
    for key, value in manifest.metrics.items():
        metrics.log_metric(key, value)
    return storage.join(output, RESULTS)
