"""Container images of the components: one per runtime variant, tagged with the package version."""

from inkbooth import __version__

REGISTRY = "ghcr.io/inkbooth"
VARIANTS = ("ocr-cpu", "ocr-cuda", "train-cuda")


def image(variant: str, registry: str = REGISTRY, tag: str = __version__) -> str:
    """The image reference a component of this runtime variant runs in."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown image variant {variant!r}; known: {', '.join(VARIANTS)}")
    return f"{registry}/inkbooth-{variant}:{tag}"
