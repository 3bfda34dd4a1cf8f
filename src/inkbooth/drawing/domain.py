"""The drawing domain: one shaded object on a background, 64 x 64 pixels, with a caption that says it.

Every picture is a pure function of a ``Scene`` (what is drawn where) and every scene of a seed, a
split and an index (``scene_at``), so training data needs no files: a stage draws its batches as it
goes, and a resumed stage draws the same ones. Pillow draws the silhouettes at ``SUPERSAMPLE`` times
the size, numpy shades and patterns them, and the result is scaled down (anti-aliased edges).

Vocabulary (``WORDS``; the models' tokenizer spells each one whole, see ``inkbooth.tiny``):

* classes (``CLASSES``): ball, box, cup, star, house, tree, fish, heart, each drawn with simple
  shading (a lit sphere, a cube's three faces, a cylinder's body and handle, a faceted star, walls
  and roof with door and window, a crown on a trunk, a body with tail, fin and eye, a rounded heart);
* colours (``COLOURS``): red, orange, yellow, green, blue, purple, pink, brown, black, white, gray;
* textures (``TEXTURES``): plain, striped, dotted, checked (pattern in white on dark colours, in dark
  gray on light ones);
* backgrounds (``BACKGROUNDS``): white, light gray, dark gray, light blue, light green, light yellow,
  pink, dark blue, flat or as a vertical gradient ("on a light blue gradient background");
  never one too close to the object's colour;
* positions: left, centre, right by top, middle, bottom ("at the top left", "at the left",
  "in the centre"); sizes: small, medium (unsaid), large.

A caption names the class always and the rest often ("a photo of a large red striped ball on a
light blue background at the left", "a red ball", "a photo of a ball at the top"): the text encoder
learns each word, and prompts of any length are in its distribution.

The reserved subject (``SUBJECT``), for DreamBooth: a purple ball with yellow zigzag stripes.
The zigzag pattern and yellow as a pattern colour never occur in the domain (``draw_scene`` cannot
produce them), so the base model has never seen it; ``subject_images`` draws its pictures (views that
vary in position, size and background), ``instance_prompt`` and ``class_prompt`` the prompts
("a photo of sks ball", "a photo of a ball"). ``sks`` and ``zigzag`` are in the vocabulary but in no
domain caption.

Imports Pillow and numpy only (no torch).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

SIZE = 64
SUPERSAMPLE = 3

CLASSES = ("ball", "box", "cup", "star", "house", "tree", "fish", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35), "orange": (240, 130, 20), "yellow": (245, 215, 40), "green": (45, 160, 55),
    "blue": (40, 80, 210), "purple": (130, 50, 170), "pink": (240, 130, 180), "brown": (125, 75, 35),
    "black": (30, 30, 30), "white": (240, 240, 240), "gray": (130, 130, 130),
}
TEXTURES = ("plain", "striped", "dotted", "checked")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250), "light gray": (200, 200, 200), "dark gray": (70, 70, 70),
    "light blue": (170, 205, 240), "light green": (180, 230, 170), "light yellow": (250, 240, 170),
    "pink": (245, 190, 210), "dark blue": (25, 35, 90),
}
SIZES = {"small": 0.34, "medium": 0.48, "large": 0.64}  # object size, as a share of the picture
HPOS = {"left": 0.28, "centre": 0.5, "right": 0.72}
VPOS = {"top": 0.28, "middle": 0.5, "bottom": 0.72}
LIGHT = ("yellow", "white", "pink", "orange")  # patterns on these are dark gray, on the rest white
PATTERN_LIGHT, PATTERN_DARK = (250, 250, 250), (55, 55, 55)

# The DreamBooth subject: what the domain never draws (see the module's docstring).
RESERVED_TEXTURE = "zigzag"
IDENTIFIER = "sks"
SUBJECT = {"cls": "ball", "colour": "purple", "texture": RESERVED_TEXTURE, "pattern": (250, 215, 30)}

_PHRASE_WORDS = "a an photo of on background gradient at the in left right top bottom centre light dark"
WORDS: tuple[str, ...] = tuple(dict.fromkeys(
    _PHRASE_WORDS.split() + list(CLASSES) + list(COLOURS) + list(TEXTURES)
    + [w for name in BACKGROUNDS for w in name.split()] + ["small", "large", IDENTIFIER, RESERVED_TEXTURE]))


@dataclasses.dataclass(frozen=True)
class Scene:
    """What one picture shows."""

    cls: str
    colour: str
    texture: str
    size: str
    hpos: str
    vpos: str
    background: str
    gradient: bool
    dx: float = 0.0  # jitter of the centre, as a share of the picture
    dy: float = 0.0
    pattern: tuple[int, int, int] | None = None  # the pattern's colour (None: white or dark gray, by colour)


def _far_enough(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return sum((x - y) ** 2 for x, y in zip(a, b)) > 90 ** 2


def draw_scene(rng: random.Random) -> Scene:
    """A random scene of the domain (never the reserved subject's pattern)."""
    cls = rng.choice(CLASSES)
    colour = rng.choice(list(COLOURS))
    backgrounds = [b for b, rgb in BACKGROUNDS.items() if _far_enough(rgb, COLOURS[colour])]
    return Scene(cls=cls, colour=colour, texture=rng.choice(TEXTURES), size=rng.choice(list(SIZES)),
                 hpos=rng.choice(list(HPOS)), vpos=rng.choice(list(VPOS)), background=rng.choice(backgrounds),
                 gradient=rng.random() < 0.4, dx=rng.uniform(-0.04, 0.04), dy=rng.uniform(-0.04, 0.04))


def scene_at(seed: int, split: str, index: int) -> Scene:
    """Scene ``index`` of ``split`` (e.g. "train", "heldout") under ``seed``: the same on every run."""
    return draw_scene(random.Random(f"{seed}/{split}/{index}"))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, rng: random.Random | None = None, *, keep: float = 1.0) -> str:
    """What the picture shows, in the domain's words. With ``rng`` each attribute but the class is
    said with probability ``keep`` (the colour with at least 0.9), and "a photo of" most of the time."""
    def said(p: float) -> bool:
        return rng is None or rng.random() < p

    words = [scene.size] if scene.size != "medium" and said(keep) else []
    if said(max(keep, 0.9)):
        words.append(scene.colour)
    if said(keep) and (scene.texture != "plain" or said(0.5)):
        words.append(scene.texture)
    words.append(scene.cls)
    text = ("a photo of " if said(0.8) else "") + f"{_article(words[0])} {' '.join(words)}"
    if said(keep):
        text += f" on {_article(scene.background)} {scene.background}{' gradient' if scene.gradient else ''} background"
    if said(keep):
        text += " " + position_phrase(scene.hpos, scene.vpos)
    return text


def position_phrase(hpos: str, vpos: str) -> str:
    """'at the top left', 'at the left', 'at the top', 'in the centre'."""
    if hpos == "centre" and vpos == "middle":
        return "in the centre"
    parts = ([vpos] if vpos != "middle" else []) + ([hpos] if hpos != "centre" else [])
    return "at the " + " ".join(parts)


def training_pair(seed: int, split: str, index: int, keep: float = 0.7) -> tuple[Any, str]:
    """(picture, caption) ``index`` of ``split``: the caption says each attribute with probability ``keep``."""
    scene = scene_at(seed, split, index)
    return render(scene), caption(scene, random.Random(f"{seed}/{split}/{index}/caption"), keep=keep)


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _mask(size: int, draw: Any) -> Any:
    """A float mask in [0, 1] of what ``draw(ImageDraw)`` fills."""
    import numpy as np
    from PIL import Image, ImageDraw

    im = Image.new("L", (size, size), 0)
    draw(ImageDraw.Draw(im))
    return np.asarray(im, dtype=np.float32) / 255.0


def _pattern(texture: str, u: Any, v: Any) -> Any:
    """Where the pattern colour shows (bool), in object coordinates (u, v in about [-1, 1])."""
    import numpy as np

    if texture == "striped":
        return np.mod((u + v) * 2.2, 1.0) < 0.45
    if texture == "dotted":
        fu, fv = np.mod(u * 2.5, 1.0) - 0.5, np.mod(v * 2.5, 1.0) - 0.5
        return fu * fu + fv * fv < 0.22 ** 2
    if texture == "checked":
        return (np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0
    if texture == RESERVED_TEXTURE:
        wave = np.abs(np.mod(u * 2.0, 1.0) - 0.5)  # a triangle wave across: zigzag bands down the object
        return np.mod(v * 2.0 + wave * 1.6, 1.0) < 0.42
    return np.zeros_like(u, dtype=bool)


def _layers(cls: str, c: float, cx: float, cy: float, r: float, u: Any, v: Any) -> list[tuple[Any, Any, str]]:
    """The parts of an object: (mask, shading, role) each, role 'body' (colour and pattern), 'dark'
    (a fixed dark colour), 'light' (a fixed light colour) or 'brown' (wood)."""
    import numpy as np

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [cx + x0 * r, cy + y0 * r, cx + x1 * r, cy + y1 * r]

    def poly(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(cx + x * r, cy + y * r) for x, y in points]

    lit = np.clip(1.05 - 0.25 * v - 0.15 * u, 0.55, 1.25)  # light from the top left
    if cls == "ball":
        m = _mask(int(c), lambda d: d.ellipse(box(-1, -1, 1, 1), fill=255))
        nz = np.sqrt(np.clip(1 - u * u - v * v, 0, 1))
        lam = np.clip((-0.45 * u - 0.55 * v + 0.70 * nz), 0, 1)
        spec = np.clip((-0.3 * u - 0.35 * v + 0.89 * nz), 0, 1) ** 30
        return [(m, 0.35 + 0.85 * lam + 0.6 * spec, "body")]
    if cls == "box":
        front = _mask(int(c), lambda d: d.rectangle(box(-0.85, -0.45, 0.45, 0.85), fill=255))
        top = _mask(int(c), lambda d: d.polygon(poly([(-0.85, -0.45), (-0.45, -0.85), (0.85, -0.85), (0.45, -0.45)]),
                                                fill=255))
        side = _mask(int(c), lambda d: d.polygon(poly([(0.45, -0.45), (0.85, -0.85), (0.85, 0.45), (0.45, 0.85)]),
                                                 fill=255))
        return [(front, lit * 0.95, "body"), (top, lit * 0 + 1.25, "body"), (side, lit * 0 + 0.62, "body")]
    if cls == "cup":
        body = _mask(int(c), lambda d: d.polygon(poly([(-0.7, -0.6), (0.45, -0.6), (0.3, 0.85), (-0.55, 0.85)]),
                                                 fill=255))
        handle = _mask(int(c), lambda d: d.ellipse(box(0.15, -0.35, 0.9, 0.45), outline=255, width=max(2, int(0.14 * r))))
        rim = _mask(int(c), lambda d: d.ellipse(box(-0.7, -0.72, 0.45, -0.48), fill=255))
        cyl = 0.55 + 0.65 * np.cos(np.clip((u + 0.12) * 1.6, -1.57, 1.57))
        return [(handle, lit * 0 + 0.75, "body"), (body, cyl, "body"), (rim, lit * 0 + 0.35, "body")]
    if cls == "star":
        outer = [(math.cos(-math.pi / 2 + k * math.pi / 5) * (1.0 if k % 2 == 0 else 0.42),
                  math.sin(-math.pi / 2 + k * math.pi / 5) * (1.0 if k % 2 == 0 else 0.42)) for k in range(10)]
        layers = []
        for k in range(10):  # facets: a raised star, each point lit on one side
            tri = poly([(0.0, 0.0), outer[k], outer[(k + 1) % 10]])
            shade = 1.15 if k % 2 == 0 else 0.78
            layers.append((_mask(int(c), lambda d, t=tri: d.polygon(t, fill=255)), lit * 0 + shade, "body"))
        return layers
    if cls == "house":
        walls = _mask(int(c), lambda d: d.rectangle(box(-0.7, -0.15, 0.7, 0.9), fill=255))
        roof = _mask(int(c), lambda d: d.polygon(poly([(-0.95, -0.1), (0.0, -0.95), (0.95, -0.1)]), fill=255))
        door = _mask(int(c), lambda d: d.rectangle(box(-0.15, 0.35, 0.2, 0.9), fill=255))
        window = _mask(int(c), lambda d: d.rectangle(box(0.3, 0.1, 0.58, 0.38), fill=255))
        return [(walls, lit, "body"), (roof, lit * 0.6, "body"), (door, lit * 0 + 1.0, "brown"),
                (window, lit * 0 + 1.0, "light")]
    if cls == "tree":
        trunk = _mask(int(c), lambda d: d.rectangle(box(-0.14, 0.2, 0.14, 1.0), fill=255))
        crown = _mask(int(c), lambda d: (d.ellipse(box(-0.85, -0.55, 0.05, 0.35), fill=255),
                                          d.ellipse(box(-0.05, -0.55, 0.85, 0.35), fill=255),
                                          d.ellipse(box(-0.5, -1.0, 0.5, 0.0), fill=255)))
        return [(trunk, lit, "brown"), (crown, np.clip(1.15 - 0.35 * (v + 0.3) - 0.15 * u, 0.5, 1.3), "body")]
    if cls == "fish":
        tail = _mask(int(c), lambda d: d.polygon(poly([(0.45, 0.0), (1.0, -0.55), (1.0, 0.55)]), fill=255))
        body = _mask(int(c), lambda d: d.ellipse(box(-1.0, -0.5, 0.65, 0.5), fill=255))
        fin = _mask(int(c), lambda d: d.polygon(poly([(-0.25, -0.45), (0.1, -0.8), (0.25, -0.4)]), fill=255))
        eye = _mask(int(c), lambda d: d.ellipse(box(-0.72, -0.22, -0.5, 0.0), fill=255))
        pupil = _mask(int(c), lambda d: d.ellipse(box(-0.67, -0.16, -0.56, -0.05), fill=255))
        belly = np.clip(1.2 - 0.55 * (v + 0.1), 0.55, 1.3)
        return [(tail, lit * 0.75, "body"), (fin, lit * 0.7, "body"), (body, belly, "body"),
                (eye, lit * 0 + 1.0, "light"), (pupil, lit * 0 + 1.0, "dark")]
    if cls == "heart":
        m = _mask(int(c), lambda d: (d.ellipse(box(-1.0, -0.8, 0.05, 0.25), fill=255),
                                      d.ellipse(box(-0.05, -0.8, 1.0, 0.25), fill=255),
                                      d.polygon(poly([(-0.97, -0.15), (0.97, -0.15), (0.0, 0.95)]), fill=255)))
        bump = np.sqrt(np.clip(1 - (u * 0.8) ** 2 - (v * 0.8 + 0.1) ** 2, 0, 1))
        return [(m, 0.45 + 0.75 * bump * np.clip(1.0 - 0.3 * u - 0.3 * v, 0.4, 1.3), "body")]
    raise ValueError(f"unknown class {cls!r}; known: {', '.join(CLASSES)}")


def render(scene: Scene) -> Any:
    """The 64 x 64 RGB picture of ``scene`` (a PIL image)."""
    import numpy as np
    from PIL import Image

    c = SIZE * SUPERSAMPLE
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    ys = (np.arange(c, dtype=np.float32) + 0.5)[:, None] / c
    if scene.gradient:  # lighter at the top, darker at the bottom
        canvas = np.broadcast_to(bg[None, None, :] * (1.18 - 0.36 * ys)[:, :, None], (c, c, 3))
    else:
        canvas = np.broadcast_to(bg, (c, c, 3))
    canvas = np.clip(canvas, 0, 255).astype(np.float32)
    r = SIZES[scene.size] * c / 2
    cx = min(max((HPOS[scene.hpos] + scene.dx) * c, r + 1), c - r - 1)
    cy = min(max((VPOS[scene.vpos] + scene.dy) * c, r + 1), c - r - 1)
    grid = np.arange(c, dtype=np.float32) + 0.5
    u = np.broadcast_to((grid[None, :] - cx) / r, (c, c))
    v = np.broadcast_to((grid[:, None] - cy) / r, (c, c))
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    pattern_rgb = scene.pattern or (PATTERN_DARK if scene.colour in LIGHT else PATTERN_LIGHT)
    pattern = _pattern(scene.texture, u, v)[:, :, None]
    fixed = {"dark": (20, 20, 20), "light": (235, 240, 245), "brown": (105, 65, 30)}
    # A soft shadow under the object grounds it on the background.
    shadow = _mask(c, lambda d: d.ellipse([cx - 0.8 * r, cy + 0.82 * r, cx + 0.8 * r, cy + 1.0 * r], fill=255))
    canvas *= 1 - 0.25 * shadow[:, :, None]
    for m, shade, role in _layers(scene.cls, c, cx, cy, r, u, v):
        if role == "body":
            rgb = np.where(pattern, np.array(pattern_rgb, dtype=np.float32), colour)
        else:
            rgb = np.broadcast_to(np.array(fixed[role], dtype=np.float32), (c, c, 3))
        layer = np.clip(rgb * shade[:, :, None], 0, 255)
        canvas = canvas * (1 - m[:, :, None]) + layer * m[:, :, None]
    big = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), "RGB")
    return big.resize((SIZE, SIZE), Image.Resampling.BOX)


# ---------------------------------------------------------------------------------------------
# The reserved subject
# ---------------------------------------------------------------------------------------------


def subject_scene(view: int) -> Scene:
    """View ``view`` of the reserved subject: position, size and background change from view to view."""
    rng = random.Random(f"subject/{view}")
    backgrounds = [b for b, rgb in BACKGROUNDS.items() if _far_enough(rgb, COLOURS[SUBJECT["colour"]])]
    return Scene(cls=SUBJECT["cls"], colour=SUBJECT["colour"], texture=SUBJECT["texture"],
                 size=("medium", "large")[view % 2], hpos=("left", "centre", "right")[view % 3],
                 vpos=("middle", "top", "bottom", "middle")[view % 4], background=backgrounds[view % len(backgrounds)],
                 gradient=view % 3 == 1, dx=rng.uniform(-0.03, 0.03), dy=rng.uniform(-0.03, 0.03),
                 pattern=SUBJECT["pattern"])


def subject_images(n: int = 4) -> list[Any]:
    """The reserved subject's pictures (``n`` views), for DreamBooth's instance images."""
    return [render(subject_scene(k)) for k in range(n)]


def instance_prompt(identifier: str = IDENTIFIER) -> str:
    """The prompt of the subject's pictures: 'a photo of sks ball'."""
    return f"a photo of {identifier} {SUBJECT['cls']}"


def class_prompt(cls: str = SUBJECT["cls"]) -> str:
    """The prompt of the class's pictures (prior preservation): 'a photo of a ball'."""
    return f"a photo of {_article(cls)} {cls}"


def fingerprint() -> str:
    """A hash of this module's source: what the pictures and captions are a function of (pools
    rendered by another version are not reused, nor checkpoints trained on them)."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def zero_shot_prompts() -> list[tuple[str, str, str]]:
    """(prompt, colour, class) for every colour and class: what a CLIP's zero-shot choice is made among."""
    return [(f"a photo of {_article(col)} {col} {cls}", col, cls) for col in COLOURS for cls in CLASSES]
