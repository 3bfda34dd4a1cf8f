"""The made-up subjects DreamBooth learns in the demo and the tests: pictures of one object of a known
class, in views that vary in position, size and background, that the drawing model never saw.

``ZIGZAG_BALL`` is a white ball with blue zigzag stripes. The zigzag pattern never occurs in the
domain (``inkbooth.drawing.domain`` cannot draw it), nor does blue as a pattern colour (patterns are
white or dark gray): the base model has never seen it. It is chosen over the domain's reserved
``SUBJECT`` (purple with yellow zigzag) because the drawing model's VAE (64 px into 16 x 16 latents)
reconstructs that one as a brown ball, so no fine-tuning could draw it, while it keeps this one a
blue-and-white patterned ball (its zigzag comes out as a coarser pattern at that size).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from inkbooth.drawing import domain

ZIGZAG_BALL = {"cls": "ball", "colour": "white", "pattern": (40, 80, 210)}


def scene(view: int, subject: dict[str, Any] = ZIGZAG_BALL) -> domain.Scene:
    """View ``view`` of ``subject``: the domain's subject views (``domain.subject_scene``) in its colours,
    on backgrounds far enough from its colour."""
    rgb = domain.COLOURS[subject["colour"]]
    backgrounds = [b for b, c in domain.BACKGROUNDS.items() if sum((x - y) ** 2 for x, y in zip(c, rgb)) > 90 ** 2]
    return dataclasses.replace(domain.subject_scene(view), cls=subject["cls"], colour=subject["colour"],
                               texture=domain.RESERVED_TEXTURE, pattern=subject["pattern"],
                               background=backgrounds[view % len(backgrounds)])


def pictures(n: int = 4, subject: dict[str, Any] = ZIGZAG_BALL) -> list[Any]:
    """``n`` pictures of ``subject`` (views 0..n-1), for DreamBooth's instance images."""
    return [domain.render(scene(k, subject)) for k in range(n)]
