"""KFP component: OCR one shard of the planned documents."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def recognize_shard(
    shard: str,
    output: str,
    config: dict,
    onnx_model: dsl.Input[dsl.Model],
    plan: dsl.Input[dsl.Dataset],
    summary: dsl.Output[dsl.Dataset],
):
    """Read the documents of `shard`; one result per document under `output`, skipping those already done."""
    import json

    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.ocr.batch import read_plan
    from inkbooth.ocr.recognize import RecognizeConfig, recognize_documents

    planned = read_plan(plan.path)
    result = recognize_documents(
        planned["documents"], lineage.target(onnx_model), output,
        cfg.from_dict(RecognizeConfig, config, source="recognize config"), shard=shard, keys=planned["keys"],
    )
    with open(summary.path, "w") as f:
        json.dump(result, f)
    summary.metadata.update(result)
