"""Container images of the components: one per runtime variant, tagged with the package version.

A cluster file may name them by digest instead (``images:`` in ``inkbooth.cluster.ClusterConfig``,
e.g. from ``make push-images``' build/images/digests.yaml), so a run uses exactly the image that
was built and tested, whatever the tag points at later.
"""

from __future__ import annotations

import re

from inkbooth import __version__

REGISTRY = "ghcr.io/inkbooth"
VARIANTS = ("ocr-cpu", "ocr-cuda", "train-cuda")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image(variant: str, registry: str = REGISTRY, tag: str = __version__) -> str:
    """The image reference a component of this runtime variant runs in."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown image variant {variant!r}; known: {', '.join(VARIANTS)}")
    return f"{registry}/inkbooth-{variant}:{tag}"


def variant_of(reference: str) -> str | None:
    """The variant an image reference belongs to (by its repository name), if any."""
    name = reference.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return next((v for v in VARIANTS if name == f"inkbooth-{v}"), None)


def by_digest(variant: str, pin: str, registry: str = REGISTRY) -> str:
    """The reference of ``variant``'s image pinned by ``pin``: a digest or a full ``repo@sha256:...``."""
    if variant not in VARIANTS:
        raise ValueError(f"images: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    repo, _, digest = pin.rpartition("@") if "@" in pin else (f"{registry}/inkbooth-{variant}", "@", pin)
    if not _DIGEST.match(digest):
        raise ValueError(f"images.{variant}: {pin!r} is not a digest (sha256: and 64 hex digits, "
                         "or repository@sha256:...)")
    if variant_of(repo) != variant:
        raise ValueError(f"images.{variant}: {pin!r} names another image than inkbooth-{variant}")
    return f"{repo}@{digest}"
