"""KFP component: list the documents once and split them into shards."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def plan_ocr(documents: str, num_shards: int, plan: dsl.Output[dsl.Dataset]) -> list:
    """The shard specs ("i/n") over the documents under `documents`; the document list goes to `plan`."""
    from inkbooth.ocr.batch import plan_documents, write_plan

    result = plan_documents(documents, num_shards)
    write_plan(result, plan.path)
    plan.metadata["documents"] = len(result["keys"])
    return result["shards"]
