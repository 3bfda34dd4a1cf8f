"""The DreamBooth report: samples with their prompts, subject fidelity per step, validation images per
step, loss, class images.

Built from a training artifact or a registered model version (both hold ``training.json`` with the
logged loss history, and ``validation/step-N/`` images), optionally the samples artifact, and the
class-image set named in the lineage. Every image is inlined; the loss curve is drawn with
matplotlib (one marker per logged step) and its numbers are listed below it.
"""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.reports import figures
from inkbooth.reports.page import Cell, Page, data_uri, esc, png_bytes

log = logging.getLogger(__name__)

KIND = "dreambooth"
CONTACT_SHEET_MAX = 48
_STEP = re.compile(r"^validation/step-(\d+)/(\d+)\.png$")


def _image(artifact: str, path: str, manifest: artifacts.Manifest | None = None) -> Any:
    """An image file of a published artifact, read through its manifest (the current version, verified)."""
    from PIL import Image

    return Image.open(io.BytesIO(artifacts.read_bytes(artifact, path, manifest))).convert("RGB")


def _img_tag(image: Any, alt: str, max_side: int = 256, css: str = "") -> str:
    cls = f' class="{esc(css)}"' if css else ""
    return f'<img{cls} alt="{esc(alt)}" src="{data_uri(png_bytes(image, max_side))}">'


def read_training(model_uri: str, manifest: artifacts.Manifest | None = None) -> dict[str, Any]:
    """``training.json`` of a training artifact or a registered version (config, metrics, lineage, history)."""
    try:
        return json.loads(artifacts.read_text(model_uri, "training.json", manifest))
    except (storage.NotFoundError, artifacts.NotPublishedError):  # no artifact, or no training.json in it
        raise ValueError(f"{model_uri}: no training.json; not a DreamBooth training artifact or model version") from None


def validation_images(model_uri: str, manifest: artifacts.Manifest) -> dict[int, list[str]]:
    """Step -> the validation image files at that step (in prompt order)."""
    steps: dict[int, list[tuple[int, str]]] = {}
    for f in manifest.files:
        m = _STEP.match(f.path)
        if m:
            steps.setdefault(int(m.group(1)), []).append((int(m.group(2)), f.path))
    return {step: [p for _, p in sorted(files)] for step, files in sorted(steps.items())}


def add_loss(page: Page, history: list[dict[str, Any]]) -> None:
    """The loss curve (one marker per logged step) and the logged numbers."""
    if not history:
        page.paragraph("No loss was logged (log_every larger than the run?).", css="muted")
        return
    page.image(figures.loss_curve_png(history), "training loss curve", css="loss-curve",
               attrs={"data-points": len(history)},
               caption=f"{len(history)} logged steps, from step {history[0]['step']} to {history[-1]['step']}")
    keys = [k for k in ("loss", "instance_loss", "prior_loss", "lr") if any(k in h for h in history)]
    page.table(["step", *keys], [[h["step"], *[h.get(k) for k in keys]] for h in history], css="loss",
               markdown=len(history) <= 200)


def add_class_images(page: Page, class_images: str) -> None:
    """A contact sheet of (up to 48 of) the class images of the set at ``class_images``."""
    try:
        manifest = artifacts.read_manifest(class_images)
    except (artifacts.NotPublishedError, storage.StorageError, ValueError) as e:
        page.paragraph(f"Class images at {class_images} could not be read: {e}", css="muted")
        return
    names = sorted(f.path for f in manifest.files if f.path.endswith(".png"))
    shown = names[:CONTACT_SHEET_MAX]
    sheet = figures.contact_sheet([_image(class_images, n, manifest) for n in shown])
    prompt = manifest.config.get("prompt", "")
    page.meta("set", class_images)
    page.image(png_bytes(sheet), "class-image contact sheet", css="contact-sheet", attrs={"data-images": len(shown)},
               caption=f"{len(shown)} of {len(names)} class images for {prompt!r}")


def add_samples(page: Page, samples: str) -> None:
    """The samples, one row per prompt, and the grid image the sampling stage wrote."""
    index = json.loads(artifacts.read_text(samples, "samples.json"))
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for entry in index:
        by_prompt.setdefault(entry["prompt"], []).append(entry)
    rows = []
    for prompt, entries in by_prompt.items():
        tags = "".join(_img_tag(_image(samples, e["file"]), f"{prompt} #{e['image']}", css="sample")
                       for e in entries)
        rows.append([Cell(prompt), Cell(f"{len(entries)} images", tags)])
    page.table(["prompt", "images"], rows, css="grid")
    grid = artifacts.read_bytes(samples, "grid.png")
    page.image(grid, "sample grid", css="sample-grid", html=False,
               caption="rows: " + "; ".join(f"{i + 1}. {p}" for i, p in enumerate(by_prompt)))


FIDELITY = ("dino", "clip_i", "clip_t", "class_similarity", "class_diversity", "class_subject_dino")


def add_evaluation(page: Page, uri: str, manifest: artifacts.Manifest, prefix: str = "") -> bool:
    """The evaluation's table (one row per step judged, the base model first), the selection and its
    reason, and each step's grids; ``prefix`` is where evaluation.json sits in the artifact. False if
    there is none."""
    paths = {f.path for f in manifest.files}
    if f"{prefix}evaluation.json" not in paths:
        return False
    record = json.loads(artifacts.read_text(uri, f"{prefix}evaluation.json", manifest))
    chosen = record["selected"]
    page.paragraph(f"Registered: step {chosen['step']}. {chosen['reason']}.", css="selection")
    rows = []
    for r in record["rows"]:
        name = "base" if r["source"] == "base" else f"step-{r['step']:08d}"
        label = "base model" if r["source"] == "base" else str(r["step"]) + (" (selected)" if r["step"] == chosen["step"] else "")
        tags = "".join(_img_tag(_image(uri, f"{prefix}grids/{g}.png", manifest), f"{label}: {g}", 320, "fidelity-grid")
                       for g in (name, f"class-{name}") if f"{prefix}grids/{g}.png" in paths)
        rows.append([label, *[r.get(k) for k in FIDELITY], r.get("seconds"), Cell("grids", tags)])
    page.table(["step", *FIDELITY, "seconds", "pictures (subject prompts; class prompt)"], rows, css="fidelity")
    page.paragraph("dino, clip_i: subject fidelity (cosine to the real subject pictures); clip_t: prompt fidelity; "
                   "class_similarity: class-prompt pictures against the base model's, same seeds; class_diversity: "
                   "1 - their mean cosine; class_subject_dino: their cosine to the subject (drift). Prompts: "
                   + "; ".join(record.get("prompts", [])[:8]), css="muted")
    return True


def evaluation_report(uri: str) -> Page:
    """The report of an evaluation artifact (``inkbooth.dreambooth.evaluate``)."""
    manifest = artifacts.read_manifest(uri)
    page = Page("DreamBooth evaluation: subject fidelity and class preservation per step", kind=KIND)
    page.meta("evaluation", uri)
    page.meta("trained", manifest.lineage.get("trained", ""))
    page.meta("base model", manifest.lineage.get("base_model", ""))
    page.heading("Subject fidelity per step", anchor="fidelity")
    add_evaluation(page, uri, manifest)
    return page


def dreambooth_report(model_uri: str, *, samples: str | None = None, class_images: str | None = None,
                      title: str | None = None) -> Page:
    """The report of the training artifact or model version at ``model_uri`` (and its samples, if given)."""
    manifest = artifacts.read_manifest(model_uri)
    training = read_training(model_uri, manifest)
    lineage = training.get("lineage", {})
    config = training.get("config", {})
    config = config.get("train", config)  # a registered version nests the training config
    metrics = training.get("metrics", {})
    history = training.get("history", [])

    page = Page(title or f"DreamBooth report: {manifest.name or 'training'} {manifest.version or ''}".strip(), kind=KIND)
    page.meta("model", model_uri)
    page.meta("base model", lineage.get("base_model", ""))
    page.meta("subject images", lineage.get("instance_images", ""))
    page.meta("instance prompt", config.get("instance_prompt", ""))
    page.heading("Training", anchor="training")
    page.table(["measure", "value"], [[k.replace("_", " "), v] for k, v in metrics.items()], css="metrics")
    if "evaluation/evaluation.json" in {f.path for f in manifest.files}:
        page.heading("Subject fidelity per step", anchor="fidelity")
        add_evaluation(page, model_uri, manifest, "evaluation/")
    if samples:
        page.heading("Samples", anchor="samples")
        add_samples(page, samples)
    page.heading("Training loss", anchor="loss")
    add_loss(page, history)
    if metrics.get("resumed_from_step"):
        page.paragraph(f"Resumed from step {metrics['resumed_from_step']}: the curve starts there.", css="muted")
    steps = validation_images(model_uri, manifest)
    page.heading("Validation images per checkpoint step", anchor="validation")
    if steps:
        prompts = config.get("validation_prompts", [])
        rows = [[step, Cell(f"{len(files)} images",
                            "".join(_img_tag(_image(model_uri, f, manifest), f"step {step} #{i}", 160, "validation")
                                    for i, f in enumerate(files)))] for step, files in steps.items()]
        page.table(["step", "images (prompts: " + "; ".join(prompts) + ")"], rows, css="validation")
    else:
        page.paragraph("No validation images (validation_every: 0).", css="muted")
    class_images = class_images or lineage.get("class_images")
    page.heading("Class images", anchor="class-images")
    if class_images:
        add_class_images(page, class_images)
    else:
        page.paragraph("Trained without prior preservation: no class images.", css="muted")
    return page
