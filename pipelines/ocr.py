"""The OCR pipeline: export and quantize, OCR the documents in parallel shards, merge and report."""

from kfp import dsl

from inkbooth.cluster import ClusterConfig, apply
from inkbooth.components.ocr_export.component import export_trocr
from inkbooth.components.ocr_merge.component import merge_ocr
from inkbooth.components.ocr_plan.component import plan_ocr
from inkbooth.components.ocr_recognize.component import recognize_shard


def build(cluster: ClusterConfig | None = None):
    """The pipeline with ``cluster``'s per-stage Kubernetes settings baked in."""
    cluster = cluster or ClusterConfig()

    @dsl.pipeline(name="inkbooth-ocr",
                  description="TrOCR printed-text OCR: ONNX export with parity checks, sharded batch OCR, report")
    def ocr_pipeline(
        model: str,
        documents: str,
        output: str,
        num_shards: int = 4,
        ground_truth: str = "",
        export_config: dict = {},  # noqa: B006 - KFP takes parameter defaults from literals
        recognize_config: dict = {},  # noqa: B006
        s3_secret: str = "inkbooth-s3",
    ) -> str:
        export = apply(export_trocr(model=model, config=export_config), cluster.export_trocr, s3_secret)
        export.set_display_name("export-and-quantize")
        plan = apply(plan_ocr(documents=documents, num_shards=num_shards), cluster.plan_ocr, s3_secret)
        plan.set_display_name("plan-shards")
        with dsl.ParallelFor(items=plan.outputs["Output"], parallelism=0) as shard:
            ocr = apply(recognize_shard(shard=shard, output=output, config=recognize_config,
                                        onnx_model=export.outputs["onnx_model"], plan=plan.outputs["plan"]),
                        cluster.recognize, s3_secret)
            ocr.set_display_name("ocr-shard")
        merge = apply(merge_ocr(output=output, ground_truth=ground_truth, onnx_model=export.outputs["onnx_model"],
                                plan=plan.outputs["plan"], summaries=dsl.Collected(ocr.outputs["summary"])),
                      cluster.merge_ocr, s3_secret)
        merge.set_display_name("merge-and-report")
        return merge.outputs["Output"]

    return ocr_pipeline


ocr_pipeline = build()
