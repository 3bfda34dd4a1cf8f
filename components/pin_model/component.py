"""KFP component: pin a model to what it is now (content hash or hub commit), for content-keyed caching."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def pin_model(model: str) -> str:
    """The fingerprint of `model` (hub id, folder or s3://), found without downloading it; never cached."""
    from inkbooth.models import fingerprint

    return fingerprint(model)
