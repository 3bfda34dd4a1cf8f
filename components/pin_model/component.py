"""KFP component: pin a model to what it is now (content hash or hub commit), for content-keyed caching."""

from typing import NamedTuple

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def pin_model(model: str, base_model: dsl.Output[dsl.Model]) -> NamedTuple("Pinned", [("key", str)]):
    """The fingerprint of `model` (hub id, folder or s3://), found without downloading it; never cached.

    `base_model` is the model as an artifact for ML Metadata's lineage: a pointer holding the hub id
    or URI and its fingerprint, which the stages that read the model take as input.
    """
    from inkbooth import lineage
    from inkbooth.models import fingerprint

    key = fingerprint(model)
    lineage.point(base_model, model, fingerprint=key)
    return (key,)
