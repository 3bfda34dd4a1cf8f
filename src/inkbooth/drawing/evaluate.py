"""Judging pictures of the domain with the small CLIP: zero-shot colour and class, CLIP-T, CLIP-I.

``ClipJudge`` wraps a ``CLIPModel`` folder (normally the committed ``shapes-clip``) and goes through
its ``CLIPProcessor`` like any CLIP checkpoint, so the same code judges with a hub CLIP. Its figures:

* zero-shot choice among "a photo of a {colour} {class}" for every colour and class
  (``domain.zero_shot_prompts``): class and colour accuracy are read off the one best prompt;
* CLIP-T: the mean cosine between a picture's and its prompt's embeddings, beside the same for
  prompts of other pictures (``clip_t_random``): a model that follows its prompts has the first
  clearly above the second;
* CLIP-I: the mean cosine between generated and reference pictures (DreamBooth's subject fidelity).
"""

from __future__ import annotations

from typing import Any

from inkbooth import judges


class ClipJudge(judges.Clip):
    """The small CLIP at ``folder`` (or a model and processor already loaded), with the domain's figures."""

    def zero_shot(self, images: list[Any]) -> list[tuple[str, str]]:
        """(colour, class) of each picture: its best prompt among every colour and class."""
        from inkbooth.drawing import domain

        prompts = domain.zero_shot_prompts()
        best = (self.images(images) @ self.texts([p for p, _, _ in prompts]).T).argmax(dim=-1).tolist()
        return [(prompts[k][1], prompts[k][2]) for k in best]

    def zero_shot_accuracy(self, images: list[Any], scenes: list[Any]) -> dict[str, float]:
        """Share of pictures whose class, colour, and both, the zero-shot choice gets right."""
        chosen = self.zero_shot(images)
        n = max(1, len(images))
        cls = sum(c == s.cls for (_, c), s in zip(chosen, scenes)) / n
        col = sum(c == s.colour for (c, _), s in zip(chosen, scenes)) / n
        both = sum(c == (s.colour, s.cls) for c, s in zip(chosen, scenes)) / n
        return {"class_accuracy": round(cls, 4), "colour_accuracy": round(col, 4), "joint_accuracy": round(both, 4)}

    def clip_t(self, images: list[Any], prompts: list[str]) -> dict[str, float]:
        """Mean cosine of each picture with its own prompt, and with the next picture's (a baseline)."""
        sims = self.images(images) @ self.texts(prompts).T
        n = len(images)
        own = float(sims.diagonal().mean())
        other = float(sims.roll(1, dims=1).diagonal().mean()) if n > 1 else float("nan")
        return {"clip_t": round(own, 4), "clip_t_random": round(other, 4)}

    def clip_i(self, images: list[Any], references: list[Any]) -> float:
        """Mean cosine between every picture and every reference picture."""
        return round(judges.mean_cosine(self.images(images), self.images(references)), 4)

    def prompt_following(self, images: list[Any], scenes: list[Any], prompts: list[str]) -> dict[str, float]:
        """How well samples of ``prompts`` (which describe ``scenes``) show them: CLIP-T and zero-shot accuracy."""
        acc = self.zero_shot_accuracy(images, scenes)
        return {**{f"samples_{k}": v for k, v in self.clip_t(images, prompts).items()},
                **{f"samples_{k}": v for k, v in acc.items()}}


def draw(pipe: Any, prompts: list[str], *, steps: int = 20, guidance: float = 4.0, seed: int = 0) -> list[Any]:
    """One picture per prompt from a StableDiffusionPipeline; picture i's noise is seeded by (seed, i)."""
    import torch

    gens = [torch.Generator("cpu").manual_seed(seed * 100003 + i) for i in range(len(prompts))]
    out = []
    for i in range(0, len(prompts), 16):
        out += pipe(prompts[i:i + 16], num_inference_steps=steps, guidance_scale=guidance,
                    generator=gens[i:i + 16]).images
    return out
