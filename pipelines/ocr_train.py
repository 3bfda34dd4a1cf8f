"""The OCR training pipeline: labelled lines (or born-digital PDFs made into labelled lines) -> fine-tune ->
export (parity gate) -> evaluate -> register."""

from kfp import dsl

from inkbooth.cluster import ClusterConfig
from inkbooth.components.ocr_evaluate.component import evaluate
from inkbooth.components.ocr_export.component import export_trocr
from inkbooth.components.ocr_finetune.component import finetune
from inkbooth.components.ocr_lines.component import prepare_lines
from inkbooth.components.ocr_pdflines.component import pdf_lines
from inkbooth.components.ocr_register.component import register
from inkbooth.pipelines._steps import exit_task, imported_dataset, pinned_model


def build(cluster: ClusterConfig | None = None):
    """The pipeline with ``cluster``'s per-stage Kubernetes settings baked in."""
    cluster = cluster or ClusterConfig()

    @dsl.pipeline(name="inkbooth-ocr-train",
                  description="TrOCR fine-tuning on labelled lines or born-digital PDFs: data, fine-tune, ONNX export "
                              "behind the parity gate, held-out evaluation, registration with lineage",
                  pipeline_config=cluster.pipeline_config())
    def ocr_train_pipeline(
        base_model: str,
        data: str,
        registry: str,
        checkpoints: str = "",
        data_format: str = "lines",
        extra_lines: str = "",
        pdf_lines_config: dict = {},  # noqa: B006 - KFP takes parameter defaults from literals
        lines_config: dict = {},  # noqa: B006
        finetune_config: dict = {},  # noqa: B006
        export_config: dict = {},  # noqa: B006
        evaluate_config: dict = {},  # noqa: B006
        register_config: dict = {},  # noqa: B006
        s3_secret: str = "inkbooth-s3",
        pdf_secret: str = "inkbooth-pdf",
        kfp_api: str = cluster.kfp_api(),
        model_registries: list = cluster.registry_sinks(),  # noqa: B008 - the cluster file's, baked in
    ):
        finish = exit_task(cluster, kfp_api=kfp_api, checkpoints=checkpoints, clean_checkpoints=True,
                           s3_secret=s3_secret)
        with dsl.ExitHandler(finish, name="ocr-train-run"):
            # Inputs from outside the run, as artifacts for ML Metadata's lineage: the base model pinned
            # (a pointer with its fingerprint), the data imported where it is: labelled lines, or PDFs.
            pinned = pinned_model(cluster, base_model, s3_secret, "pin-base-model")
            labelled = imported_dataset(data, "labelled lines or PDFs (data_format)", "training-data")
            # Always run: kfp.local cannot join the branches of a dsl.If (dsl.OneOf of artifacts), so with
            # no PDFs this step passes the labelled lines on as a pointer (seconds, nothing copied).
            source = cluster.apply(pdf_lines(data=labelled.output, data_format=data_format, extra_lines=extra_lines,
                                             config=pdf_lines_config), "prepare_lines", s3_secret)
            cluster.use_pdf_secret(source, pdf_secret)  # encrypted PDFs: their password, never a parameter
            source.set_display_name("pdf-lines")
            lines = cluster.apply(prepare_lines(data=source.outputs["lines"], config=lines_config), "prepare_lines",
                                  s3_secret)
            lines.set_display_name("data")
            trained = cluster.apply(finetune(base_model=pinned.outputs["base_model"], lines=lines.outputs["lines"],
                                             checkpoints=checkpoints, config=finetune_config,
                                             run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER), "finetune_trocr", s3_secret)
            trained.set_display_name("fine-tune")
            exported = cluster.apply(export_trocr(trained=trained.outputs["trained"], model_key=trained.outputs["key"],
                                                  config=export_config, parity_lines=lines.outputs["lines"]),
                                     "export_trocr", s3_secret)
            exported.set_display_name("export-and-quantize")
            evaluated = cluster.apply(evaluate(onnx_model=exported.outputs["onnx_model"],
                                               trained=trained.outputs["trained"], lines=lines.outputs["lines"],
                                               config=evaluate_config), "evaluate_ocr", s3_secret)
            evaluated.set_display_name("evaluate")
            registered = cluster.apply(register(trained=trained.outputs["trained"],
                                                onnx_model=exported.outputs["onnx_model"],
                                                evaluation=evaluated.outputs["evaluation"], registry=registry,
                                                config=register_config, model_registries=model_registries),
                                       "register_ocr", s3_secret)
            registered.set_display_name("register")

    return ocr_train_pipeline


ocr_train_pipeline = build()
