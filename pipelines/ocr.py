"""The OCR pipeline: export and quantize, OCR the documents in parallel shards, merge and report."""

from kfp import dsl

from inkbooth.components.ocr_export.component import export_trocr
from inkbooth.components.ocr_merge.component import merge_ocr
from inkbooth.components.ocr_plan.component import plan_ocr
from inkbooth.components.ocr_recognize.component import recognize_shard


@dsl.pipeline(name="inkbooth-ocr", description="TrOCR printed-text OCR: ONNX export with parity checks, sharded batch OCR, report")
def ocr_pipeline(
    model: str,
    documents: str,
    output: str,
    num_shards: int = 4,
    ground_truth: str = "",
    export_config: dict = {},  # noqa: B006 - KFP takes parameter defaults from literals
    recognize_config: dict = {},  # noqa: B006
) -> str:
    export = export_trocr(model=model, config=export_config).set_display_name("export-and-quantize")
    plan = plan_ocr(documents=documents, num_shards=num_shards).set_display_name("plan-shards")
    with dsl.ParallelFor(items=plan.outputs["Output"], parallelism=0) as shard:
        ocr = recognize_shard(
            shard=shard, output=output, config=recognize_config, onnx_model=export.outputs["onnx_model"],
            plan=plan.outputs["plan"],
        ).set_display_name("ocr-shard")
    merge = merge_ocr(
        output=output, ground_truth=ground_truth, onnx_model=export.outputs["onnx_model"], plan=plan.outputs["plan"],
        summaries=dsl.Collected(ocr.outputs["summary"]),
    ).set_display_name("merge-and-report")
    return merge.outputs["Output"]
