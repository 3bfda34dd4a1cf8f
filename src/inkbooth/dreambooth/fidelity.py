"""What the DreamBooth evaluation measures, and how it picks a step: the settings, the paper's prompts,
the figures of one set of pictures, and the choice.

Subject fidelity, as the DreamBooth paper (Ruiz et al., 2023) measures it, over pictures made from
prompts that name the subject by its identifier:

* ``dino``: mean cosine between DINO CLS embeddings of the generated and the real subject pictures
  (every pair); it tells one object from another of the same class;
* ``clip_i``: the same with CLIP image embeddings;
* ``clip_t``: mean cosine between each picture's CLIP embedding and its prompt's, said without the
  identifier ("a sks dog in the snow" is judged as "a dog in the snow": the judging CLIP never
  learned the identifier), i.e. whether the picture still shows the prompt's context.

Class preservation, over pictures of the class prompt ("a photo of dog") made with the same seeds
by the trained and the base model:

* ``class_similarity``: mean DINO cosine of picture i of the trained model with picture i of the
  base model (1: the class prompt draws what it drew before training);
* ``class_diversity``: 1 - mean DINO cosine between distinct class pictures of one model (the
  paper's concern: without prior preservation they collapse towards the subject);
* ``class_subject_dino``: mean DINO cosine of the class pictures to the real subject pictures
  (language drift: the class word coming to mean the subject).

``select_step`` picks the step to register: ``select: last``, or ``best`` by a weighted sum of
figures (``metric``, e.g. ``{dino: 1.0}`` or ``{dino: 1.0, clip_t: 0.5}``) among the steps that
meet every floor (``floors``, e.g. ``{clip_t: 0.25}``); the reason is said in words.
Imports torch only inside functions.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from inkbooth.config import option

SUBJECT_METRICS = ("dino", "clip_i", "clip_t")
CLASS_METRICS = ("class_similarity", "class_diversity", "class_subject_dino")
METRICS = SUBJECT_METRICS + CLASS_METRICS

# The evaluation prompts of the DreamBooth dataset (github.com/google/dreambooth), for objects and for
# live subjects: {identifier} is the rare token, {cls} the class noun.
_SHARED = ("a {identifier} {cls} in the jungle", "a {identifier} {cls} in the snow", "a {identifier} {cls} on the beach",
           "a {identifier} {cls} on a cobblestone street", "a {identifier} {cls} on top of pink fabric",
           "a {identifier} {cls} on top of a wooden floor", "a {identifier} {cls} with a city in the background",
           "a {identifier} {cls} with a mountain in the background",
           "a {identifier} {cls} with a blue house in the background",
           "a {identifier} {cls} on top of a purple rug in a forest")
_LOOKS = ("a red {identifier} {cls}", "a purple {identifier} {cls}", "a shiny {identifier} {cls}",
          "a wet {identifier} {cls}", "a cube shaped {identifier} {cls}")
OBJECT_PROMPTS = _SHARED + (
    "a {identifier} {cls} with a wheat field in the background",
    "a {identifier} {cls} with a tree and autumn leaves in the background",
    "a {identifier} {cls} with the Eiffel Tower in the background", "a {identifier} {cls} floating on top of water",
    "a {identifier} {cls} floating in an ocean of milk",
    "a {identifier} {cls} on top of green grass with sunflowers around it", "a {identifier} {cls} on top of a mirror",
    "a {identifier} {cls} on top of the sidewalk in a crowded street", "a {identifier} {cls} on top of a dirt road",
    "a {identifier} {cls} on top of a white rug") + _LOOKS
LIVE_PROMPTS = _SHARED + (
    "a {identifier} {cls} wearing a red hat", "a {identifier} {cls} wearing a santa hat",
    "a {identifier} {cls} wearing a rainbow scarf", "a {identifier} {cls} wearing a black top hat and a monocle",
    "a {identifier} {cls} in a chef outfit", "a {identifier} {cls} in a firefighter outfit",
    "a {identifier} {cls} in a police outfit", "a {identifier} {cls} wearing pink glasses",
    "a {identifier} {cls} wearing a yellow shirt", "a {identifier} {cls} in a purple wizard outfit") + _LOOKS


@dataclasses.dataclass
class EvaluateConfig:
    """How a DreamBooth run's steps are judged, and which one is registered."""

    clip_model: str = option("openai/clip-vit-base-patch32", "CLIP for CLIP-I and CLIP-T (hub id, folder or s3://)")
    dino_model: str = option("facebook/dino-vits16", "DINO ViT for subject fidelity (hub id, folder or s3://)")
    prompt_set: Literal["object", "live", "custom"] = option(
        "object", "the DreamBooth paper's 25 prompts for objects or for live subjects, or `prompts`")
    prompts: list[str] = option([], "prompt templates for prompt_set: custom, with {identifier} and {cls}")
    class_noun: str = option("", "the class as prompts name it ('': the last word of the run's class_prompt)")
    images_per_prompt: int = option(4, "pictures per prompt and step (the paper: 4)", min=1, max=1000)
    class_images: int = option(8, "class-prompt pictures per step, for class preservation", min=2, max=10000)
    scheduler: Literal["dpmsolver++", "pndm", "ddim", "euler"] = option("dpmsolver++", "sampler")
    timestep_spacing: Literal["trailing", "leading", "linspace", "model"] = option("trailing", "sampling timesteps")
    steps: int = option(20, "sampling steps", min=1, max=1000)
    guidance_scale: float = option(7.5, "classifier-free guidance scale", min=0.0)
    seed: int = option(0, "seed; picture j of prompt i uses the same noise at every step judged")
    only_steps: list[int] = option([], "training steps to judge ([]: every snapshot and the last step)")
    select: Literal["last", "best"] = option("last", "register the last step, or the best by `metric` and `floors`")
    metric: dict[str, float] = option({"dino": 1.0}, "select: best maximises this weighted sum of figures")
    floors: dict[str, float] = option({}, "select: best only among steps with each of these figures at least this")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where to run")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = option("auto", "sampling dtype (auto: fp16 on CUDA, fp32 on CPU)")

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "evaluate")
        for what, names in (("metric", self.metric), ("floors", self.floors)):
            unknown = sorted(set(names) - set(METRICS))
            if unknown:
                raise ValueError(f"evaluate {what}: unknown figure(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
        if self.select == "best" and not self.metric:
            raise ValueError("evaluate select: best needs a metric (e.g. {dino: 1.0})")
        if self.prompt_set == "custom" and not self.prompts:
            raise ValueError("evaluate prompt_set: custom needs prompts (templates with {identifier} and {cls})")
        for p in self.prompt_templates():
            if "{identifier}" not in p:
                raise ValueError(f"evaluate prompt {p!r} has no {{identifier}}: it would not ask for the subject")
            try:
                p.format(identifier="x", cls="y")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"evaluate prompt {p!r}: only {{identifier}} and {{cls}} may be filled in ({e})") from None

    def prompt_templates(self) -> list[str]:
        return list({"object": OBJECT_PROMPTS, "live": LIVE_PROMPTS}.get(self.prompt_set, self.prompts))


def class_noun(class_prompt: str, given: str = "") -> str:
    """The class as prompts name it: ``given``, or the last word of the class prompt ("a photo of dog": dog)."""
    words = re.findall(r"[\w-]+", class_prompt)
    if given:
        return given
    if not words:
        raise ValueError(f"class_prompt {class_prompt!r} has no word to name the class by; set class_noun")
    return words[-1]


def fill(template: str, identifier: str, cls: str) -> str:
    """A prompt from a template; with ``identifier`` empty, the prompt said without it."""
    return " ".join(template.format(identifier=identifier, cls=cls).split())


def subject_figures(judge_dino: Any, judge_clip: Any, pictures: list[Any], texts: list[str],
                    references: Any) -> dict[str, float]:
    """DINO, CLIP-I and CLIP-T of ``pictures`` (made from prompts said as ``texts``, without the
    identifier); ``references`` are (DINO, CLIP) embeddings of the real subject pictures."""
    from inkbooth import judges

    clip = judge_clip.images(pictures)
    return {"dino": judges.mean_cosine(judge_dino.images(pictures), references[0]),
            "clip_i": judges.mean_cosine(clip, references[1]),
            "clip_t": judges.paired_cosine(clip, judge_clip.texts(texts))}


def class_figures(class_dino: Any, base_class_dino: Any, subject_dino: Any) -> dict[str, float]:
    """Class preservation of class pictures (DINO embeddings) against the base model's, same seeds."""
    from inkbooth import judges

    return {"class_similarity": judges.paired_cosine(class_dino, base_class_dino),
            "class_diversity": judges.diversity(class_dino),
            "class_subject_dino": judges.mean_cosine(class_dino, subject_dino)}


def score(row: dict[str, Any], metric: dict[str, float]) -> float:
    return sum(w * row[name] for name, w in metric.items())


def select_step(rows: list[dict[str, Any]], config: EvaluateConfig) -> dict[str, Any]:
    """The step to register among ``rows`` (one per judged step, with ``step`` and the figures):
    {step, score, reason}. Ties go to the later step."""
    if not rows:
        raise ValueError("no trained step was judged")
    last = max(rows, key=lambda r: r["step"])
    expr = " + ".join(f"{w:g}*{m}" for m, w in config.metric.items())
    if config.select == "last":
        return {"step": last["step"], "score": round(score(last, config.metric), 4),
                "reason": f"select: last (step {last['step']}); {expr} = {score(last, config.metric):.4f}"}
    eligible = [r for r in rows if all(r[m] >= floor for m, floor in config.floors.items())]
    floors = ", ".join(f"{m} >= {v:g}" for m, v in config.floors.items())
    if not eligible:
        return {"step": last["step"], "score": round(score(last, config.metric), 4),
                "reason": f"select: best, but no step met the floors ({floors}): the last step, {last['step']}"}
    best = max(eligible, key=lambda r: (score(r, config.metric), r["step"]))
    among = f"{len(eligible)} of {len(rows)} steps" + (f" meeting {floors}" if floors else "")
    return {"step": best["step"], "score": round(score(best, config.metric), 4),
            "reason": f"select: best; step {best['step']} has the highest {expr} = {score(best, config.metric):.4f} "
                      f"among {among}"}
