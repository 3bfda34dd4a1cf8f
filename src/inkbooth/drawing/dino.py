"""The ``dino`` stage: a small DINO ViT, self-supervised on the domain's pictures (no captions, no labels).

DreamBooth's subject fidelity "DINO" is the cosine between the CLS embeddings
(``last_hidden_state[:, 0]``) of a self-supervised ViT, facebook/dino-vits16, of generated and real
subject pictures. This stage trains the backbone ``build.build_dino`` writes as DINO (Caron et al.,
2021) trains its own:

* a student (backbone + head: a 3-layer MLP, a 64-wide bottleneck, unit-norm prototypes, i.e. a
  weight-normed linear layer with its gain fixed at 1) and a teacher of the same shape, the
  student's moving average, its momentum rising from ``teacher_momentum`` to 1 on a cosine;
* multi-crop: 2 global crops of each picture (random resized, back to full size), seen by both, and
  ``local_crops`` small ones (``local_crop_size``, the ViT interpolating its position embeddings),
  seen by the student only; the student's distribution over the prototypes matches the teacher's,
  centred (a moving average of its outputs) and sharpened (``teacher_temp`` against
  ``student_temp``), for every pair of different views;
* crops, horizontal flips and a mild brightness jitter: no hue, saturation or grayscale jitter,
  since colour and pattern are what tell the subject from other balls and the features must keep them;
* in ``background_swap`` of the views the backdrop (the pixels where the scene's backdrop shows,
  ``backdrop_masks``) is repainted, as another of the domain's backdrops for the student and a
  neutral grey for the teacher, and every crop holds the object's centre: the targets then say
  nothing of the backdrop, and the student learns to read them off the object.

DINO as it is (``background_swap`` 0) learns mostly the backdrop and the layout here, which two crops
of a picture share more surely than its small object: the subject's views then look no more like
each other than like other balls in the same places. Repainting at DINO's teacher temperature
(0.04) collapses the outputs to uniform within 100 steps, from the random start and from a backbone
trained as above alike: the teacher's outputs on views with a grey backdrop are too flat. So the
recipe trains in two stages: DINO as it is, then repainting with a sharper teacher (0.01).

Every draw of step s comes from the step's generator (``inkbooth.drawing.train``), so a resumed stage
equals an uninterrupted one: the checkpoint holds student, teacher, both heads (the centre is the
teacher head's buffer) and the optimizer. Only the teacher's backbone is saved, with its
``ViTImageProcessor``; the heads go.

Held out (``evaluate``): k-NN class and colour accuracy of "heldout" pictures (k = 10, cosine,
DINO's vote weighted by exp(cos / 0.07)) against a bank of the stage's training pictures, and
``subject_similarity``: the subject's views among themselves, against the same views as plain purple
balls, and against balls of the other colours, each pair of two different views.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

from inkbooth.drawing import domain
from inkbooth.drawing.data import Pool, heldout, to_tensor
from inkbooth.drawing.settings import StageConfig, seed_of
from inkbooth.drawing.tasks import Task

HEAD_HIDDEN, BOTTLENECK = 256, 64  # DINO's 2048 and 256, scaled to a 128-wide ViT
BANK = 2000  # training pictures the k-NN votes among
KNN, KNN_TEMP = 10, 0.07
SUBJECT_VIEWS = 8
BACKDROP_TOLERANCE = 6  # a pixel within this of the scene's backdrop (per channel, of 255) is background


def head(width: int, prototypes: int, gen: Any) -> Any:
    """DINO's projection head: MLP -> bottleneck, then the prototypes (``project`` applies it)."""
    import torch
    from torch import nn

    module = nn.ModuleDict({
        "mlp": nn.Sequential(nn.Linear(width, HEAD_HIDDEN), nn.GELU(), nn.Linear(HEAD_HIDDEN, HEAD_HIDDEN), nn.GELU(),
                             nn.Linear(HEAD_HIDDEN, BOTTLENECK)),
        "prototypes": nn.Linear(BOTTLENECK, prototypes, bias=False),
    })
    with torch.no_grad():  # DINO's init (truncated normal, zero biases), from the stage's seed
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-0.04, b=0.04, generator=gen)
                if layer.bias is not None:
                    layer.bias.zero_()
    return module


def project(backbone: Any, module: Any, pixels: Any) -> Any:
    """The head's logits (cosines to the prototypes) of the backbone's CLS embedding of ``pixels``."""
    import torch.nn.functional as F

    cls = backbone(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]
    z = F.normalize(module["mlp"](cls), dim=-1)
    return z @ F.normalize(module["prototypes"].weight, dim=-1).T


def backdrop(background: str, gradient: bool) -> Any:
    """The 64 x 64 picture of a scene's backdrop alone (uint8), as ``domain.render`` paints it: a flat
    colour, or one graded by row, computed at the render's supersampled size and box-filtered down."""
    import numpy as np

    c = domain.SIZE * domain.SUPERSAMPLE
    ys = (np.arange(c, dtype=np.float32) + 0.5) / c
    rgb = np.array(domain.BACKGROUNDS[background], dtype=np.float32)
    rows = np.clip(rgb[None, :] * ((1.18 - 0.36 * ys)[:, None] if gradient else np.ones((c, 1))), 0, 255)
    rows = np.clip(rows + 0.5, 0, 255).astype(np.uint8).astype(np.float32)
    rows = rows.reshape(domain.SIZE, domain.SUPERSAMPLE, 3).mean(axis=1).round()
    return np.broadcast_to(rows[:, None, :], (domain.SIZE, domain.SIZE, 3)).astype(np.uint8)


def backdrop_masks(pool: Pool) -> Any:
    """Where each picture of ``pool`` shows its scene's backdrop (bool, N x 64 x 64)."""
    import numpy as np

    keys = {(b, g): k for k, (b, g) in enumerate((b, g) for b in domain.BACKGROUNDS for g in (False, True))}
    drops = np.stack([backdrop(b, g) for b, g in keys]).astype(np.int16)
    index = np.array([keys[(s.background, s.gradient)]
                      for s in (domain.scene_at(pool.seed, "train", i) for i in range(pool.size))])
    out = np.empty(pool.pixels.shape[:3], dtype=bool)
    for i in range(0, pool.size, 1000):
        diff = np.abs(pool.pixels[i:i + 1000].astype(np.int16) - drops[index[i:i + 1000]]).max(axis=-1)
        out[i:i + 1000] = diff <= BACKDROP_TOLERANCE
    return out


def crops(x: Any, n: int, size: int, scale: list[float], brightness: float, gen: Any, *,
          backdrop: Any = None, swap: float = 0.0, neutral: Any = None) -> tuple[Any, Any]:
    """``n`` random resized crops (area share in ``scale``, aspect 3/4 to 4/3) of each picture of ``x``
    (B x 3 x H x W in [0, 1]) at ``size`` pixels, half of them flipped, brightness x (1 +- brightness);
    view-major (view v of picture i is row v * B + i). With ``backdrop`` (B x 1 x H x W, 1 where the
    backdrop shows), every crop holds the object's centre (its pixels' mean), and in ``swap`` of the
    views the backdrop is repainted: another of the domain's backdrops (0.4 of them graded as the
    domain's gradients are) in the second of the crops returned (the student's), ``neutral`` (an RGB
    colour in [0, 1]) in the first (the teacher's), which is otherwise the same crop.
    Drawn from ``gen``, computed on the CPU."""
    import torch
    import torch.nn.functional as F

    m = x.shape[0] * n
    x = teacher = student = x.repeat(n, 1, 1, 1)
    if backdrop is not None and swap:
        palette = torch.tensor(list(domain.BACKGROUNDS.values()), dtype=torch.float32) / 255
        colour = palette[torch.randint(len(palette), (m,), generator=gen)].view(m, 3, 1, 1)
        graded = (torch.rand(m, generator=gen) < 0.4).float().view(m, 1, 1, 1)
        ys = (torch.arange(x.shape[2]) + 0.5).div(x.shape[2]).view(1, 1, -1, 1)
        paint = (colour * (1 + graded * (0.18 - 0.36 * ys))).clamp(0, 1)
        where = backdrop.repeat(n, 1, 1, 1) * (torch.rand(m, generator=gen) < swap).float().view(m, 1, 1, 1)
        student = x * (1 - where) + paint * where
        if neutral is not None:
            teacher = x * (1 - where) + torch.tensor(neutral).view(1, 3, 1, 1) * where
    area = torch.empty(m).uniform_(scale[0], scale[1], generator=gen)
    ratio = torch.empty(m).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen).exp()
    w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)  # shares of the sides
    cx, cy = torch.rand(m, generator=gen) * 2 - 1, torch.rand(m, generator=gen) * 2 - 1
    if backdrop is None:  # anywhere: centres in grid_sample's [-1, 1]
        cx, cy = cx * (1 - w), cy * (1 - h)
    else:  # around the object, so that the views share it rather than only the backdrop
        obj = 1 - backdrop.repeat(n, 1, 1, 1)[:, 0]
        weight = obj.sum(dim=(1, 2)).clamp(min=1)
        grid_y, grid_x = (torch.arange(s, dtype=torch.float32).add(0.5).div(s).mul(2).sub(1) for s in obj.shape[1:])
        ox, oy = (obj * grid_x).sum(dim=(1, 2)) / weight, (obj * grid_y[:, None]).sum(dim=(1, 2)) / weight
        cx, cy = (ox + cx * w).clamp(-(1 - w), 1 - w), (oy + cy * h).clamp(-(1 - h), 1 - h)
    flip = torch.where(torch.rand(m, generator=gen) < 0.5, -1.0, 1.0)
    gain = 1 + (torch.rand(m, generator=gen) * 2 - 1) * brightness
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, [m, 3, size, size], align_corners=False)
    both = torch.cat([teacher, student], dim=1)  # one crop of both
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = (out * gain.view(m, 1, 1, 1)).clamp(0, 1)
    return out[:, :3], out[:, 3:]


def embed(model: Any, processor: Any, images: list[Any]) -> Any:
    """Unit-length CLS embeddings of PIL pictures, through the processor (as DreamBooth's DINO metric)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            pixels = processor(images=images[i:i + 256], return_tensors="pt").pixel_values.to(device)
            out.append(model(pixel_values=pixels).last_hidden_state[:, 0])
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def comparison_balls() -> tuple[list[Any], list[Any]]:
    """The subject's views redrawn as plain purple balls (only the pattern differs) and as balls of
    the other colours and the domain's textures (colour and pattern differ), in the same places."""
    others = [c for c in domain.COLOURS if c != domain.SUBJECT["colour"]]
    plain, other = [], []
    for k in range(SUBJECT_VIEWS):
        scene = domain.subject_scene(k)
        plain.append(domain.render(dataclasses.replace(scene, texture="plain", pattern=None)))
        background = domain.BACKGROUNDS[scene.background]
        colour = next(c for c in others[k % len(others):] + others if domain._far_enough(domain.COLOURS[c], background))
        other.append(domain.render(dataclasses.replace(scene, colour=colour, texture=domain.TEXTURES[k % 4],
                                                       pattern=None)))
    return plain, other


def subject_similarity(model: Any, processor: Any) -> dict[str, float]:
    """Mean CLS cosine of the subject's views with its other views, with the other views as plain purple
    balls and as other-coloured balls (``comparison_balls``): every pair is of two different views (place,
    size, backdrop), so only the object tells them apart. A DINO that tells the subject apart has the
    first clearly above the other two."""
    import torch

    subject = embed(model, processor, domain.subject_images(SUBJECT_VIEWS))
    plain, other = comparison_balls()
    apart = ~torch.eye(len(subject), dtype=torch.bool, device=subject.device)

    def mean_apart(pictures: Any) -> float:
        return round(float((subject @ pictures.T)[apart].mean()), 4)

    return {"subject_subject": mean_apart(subject), "subject_purple_ball": mean_apart(embed(model, processor, plain)),
            "subject_other_ball": mean_apart(embed(model, processor, other))}


def knn_accuracy(queries: Any, labels: list[str], bank: Any, bank_labels: list[str]) -> float:
    """Share of ``queries`` whose label the k nearest of ``bank`` (cosine; votes exp(cos / 0.07)) get right."""
    sims, idx = (queries @ bank.T).topk(min(KNN, len(bank_labels)), dim=-1)
    weights = (sims / KNN_TEMP).exp()
    right = 0
    for q in range(len(labels)):
        votes: dict[str, float] = {}
        for w, i in zip(weights[q].tolist(), idx[q].tolist()):
            votes[bank_labels[i]] = votes.get(bank_labels[i], 0.0) + w
        right += max(votes, key=votes.__getitem__) == labels[q]
    return round(right / max(1, len(labels)), 4)


class Dino(Task):
    def __init__(self, folder: Path, pool: Pool, config: StageConfig, device: str = "cpu") -> None:
        import torch
        from PIL import Image
        from transformers import ViTImageProcessor, ViTModel

        self.folder, self.pool, self.config, self.device = folder, pool, config, device
        self.student = ViTModel.from_pretrained(folder, add_pooling_layer=False, dtype=torch.float32).to(device)
        self.processor = ViTImageProcessor.from_pretrained(folder)
        gen = torch.Generator().manual_seed(seed_of(config.seed, "dino-head"))
        self.head = head(self.student.config.hidden_size, config.prototypes, gen).to(device)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.teacher_head.register_buffer("center", torch.zeros(1, config.prototypes, device=device))
        self.modules = {"student": self.student, "head": self.head, "teacher": self.teacher,
                        "teacher_head": self.teacher_head}  # the teacher's are checkpointed, not optimised
        self.size = self.student.config.image_size
        self.mean = torch.tensor(self.processor.image_mean).view(1, 3, 1, 1)
        self.istd = 1.0 / torch.tensor(self.processor.image_std).view(1, 3, 1, 1)
        pixels, _, scenes = heldout(config.eval_pairs)
        self.eval_images, self.eval_scenes = [Image.fromarray(p) for p in pixels], scenes
        n = min(BANK, pool.size)
        self.bank_images = [Image.fromarray(p) for p in pool.pixels[:n]]
        self.bank_scenes = [domain.scene_at(pool.seed, "train", i) for i in range(n)]
        self.backdrops = backdrop_masks(pool) if config.background_swap else None

    def _normalise(self, x: Any) -> Any:
        return ((x - self.mean) * self.istd).to(self.device)

    def loss(self, step: int, indices: list[int], gen: Any) -> Any:
        import torch
        import torch.nn.functional as F

        c = self.config
        x = (to_tensor(self.pool.pixels[indices]) + 1) / 2
        mask = torch.from_numpy(self.backdrops[indices]).float().unsqueeze(1) if self.backdrops is not None else None
        # Where the backdrop is repainted, the teacher sees it a neutral grey (the processor's mean) and
        # the student as another backdrop: the targets say nothing of it, so the student learns to
        # read them off the object, whatever is behind it.
        plain, painted = crops(x, 2, self.size, c.global_crop_scale, c.brightness, gen, backdrop=mask,
                               swap=c.background_swap, neutral=self.processor.image_mean)
        views = [painted]
        if c.local_crops:
            views.append(crops(x, c.local_crops, c.local_crop_size, c.local_crop_scale, c.brightness, gen,
                               backdrop=mask, swap=c.background_swap)[1])
        with torch.no_grad():
            teacher = project(self.teacher, self.teacher_head, self._normalise(plain))
            targets = F.softmax((teacher - self.teacher_head.center) / c.teacher_temp, dim=-1).chunk(2)
        student = torch.cat([project(self.student, self.head, self._normalise(v)) for v in views])
        logp = F.log_softmax(student / c.student_temp, dim=-1).chunk(2 + c.local_crops)
        terms = [(-q * lp).sum(dim=-1).mean() for iq, q in enumerate(targets) for v, lp in enumerate(logp) if v != iq]
        with torch.no_grad():
            self.teacher_head.center.mul_(c.center_momentum).add_(teacher.mean(dim=0, keepdim=True),
                                                                  alpha=1 - c.center_momentum)
        return torch.stack(terms).mean()

    def after_step(self, step: int) -> None:
        import torch

        m = 1 - (1 - self.config.teacher_momentum) * (math.cos(math.pi * step / self.config.max_steps) + 1) / 2
        with torch.no_grad():
            for student, teacher in ((self.student, self.teacher), (self.head, self.teacher_head)):
                for ps, pt in zip(student.parameters(), teacher.parameters()):
                    pt.mul_(m).add_(ps.detach(), alpha=1 - m)

    def evaluate(self, step: int) -> dict[str, Any]:
        self.teacher.eval()
        queries = embed(self.teacher, self.processor, self.eval_images)
        bank = embed(self.teacher, self.processor, self.bank_images)
        metrics = {"step": step,
                   "knn_class_accuracy": knn_accuracy(queries, [s.cls for s in self.eval_scenes], bank,
                                                      [s.cls for s in self.bank_scenes]),
                   "knn_colour_accuracy": knn_accuracy(queries, [s.colour for s in self.eval_scenes], bank,
                                                       [s.colour for s in self.bank_scenes]),
                   **subject_similarity(self.teacher, self.processor)}
        self.teacher.train()
        return metrics

    def save(self, out: Path) -> None:
        self.teacher.save_pretrained(out, safe_serialization=True)
        self.processor.save_pretrained(out)
