"""The OCR pipeline: pin and export the model, OCR the documents in parallel shards, merge and report."""

from kfp import dsl

from inkbooth.cluster import ClusterConfig
from inkbooth.components.ocr_export.component import export_trocr
from inkbooth.components.ocr_merge.component import merge_ocr
from inkbooth.components.ocr_plan.component import plan_ocr
from inkbooth.components.ocr_recognize.component import recognize_shard
from inkbooth.pipelines._steps import exit_task, pinned_model


def build(cluster: ClusterConfig | None = None):
    """The pipeline with ``cluster``'s per-stage Kubernetes settings baked in."""
    cluster = cluster or ClusterConfig()

    @dsl.pipeline(name="inkbooth-ocr",
                  description="TrOCR printed-text OCR: ONNX export with parity checks, sharded batch OCR, report",
                  pipeline_config=cluster.pipeline_config())
    def ocr_pipeline(
        model: str,
        documents: str,
        output: str,
        num_shards: int = 4,
        ground_truth: str = "",
        export_config: dict = {},  # noqa: B006 - KFP takes parameter defaults from literals
        recognize_config: dict = {},  # noqa: B006
        s3_secret: str = "inkbooth-s3",
        pdf_secret: str = "inkbooth-pdf",
        kfp_api: str = cluster.kfp_api(),
    ):
        finish = exit_task(cluster, kfp_api=kfp_api, checkpoints="", clean_checkpoints=False, s3_secret=s3_secret)
        with dsl.ExitHandler(finish, name="ocr-run"):
            pinned = pinned_model(cluster, model, s3_secret, "pin-model")
            export = cluster.apply(export_trocr(model=model, model_key=pinned.outputs["key"], config=export_config),
                                   "export_trocr", s3_secret)
            export.set_display_name("export-and-quantize")
            plan = cluster.apply(plan_ocr(documents=documents, num_shards=num_shards), "plan_ocr", s3_secret)
            plan.set_display_name("plan-shards")
            with dsl.ParallelFor(items=plan.outputs["Output"], parallelism=cluster.recognize.parallelism) as shard:
                ocr = cluster.apply(recognize_shard(shard=shard, output=output, config=recognize_config,
                                                    onnx_model=export.outputs["onnx_model"],
                                                    plan=plan.outputs["plan"]), "recognize", s3_secret)
                cluster.use_pdf_secret(ocr, pdf_secret)
                ocr.set_display_name("ocr-shard")
            merge = cluster.apply(merge_ocr(output=output, ground_truth=ground_truth, recognize_config=recognize_config,
                                            onnx_model=export.outputs["onnx_model"], plan=plan.outputs["plan"],
                                            summaries=dsl.Collected(ocr.outputs["summary"])), "merge_ocr", s3_secret)
            merge.set_display_name("merge-and-report")

    return ocr_pipeline


ocr_pipeline = build()
