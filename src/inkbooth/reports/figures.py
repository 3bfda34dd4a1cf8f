"""The pictures in the reports: page overlays, line crops, contact sheets and the loss curve.

Pillow draws what is raster (thumbnails, sheets, boxes burnt into a page for Markdown); page
overlays in HTML are SVG rectangles over the page image, so every box is an element with its own
tooltip; the loss curve is drawn by matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
import math
from typing import Any

from inkbooth.reports.page import esc

# Line colours by the line's confidence: p = exp(mean token log-probability).
HIGH, MEDIUM = 0.9, 0.6
COLOURS = {"high": "#2f855a", "medium": "#d69e2e", "low": "#c53030", "none": "#718096"}


def confidence_band(confidence: float | None) -> str:
    """'high', 'medium', 'low' (or 'none' without a confidence) for a mean token log-probability."""
    if confidence is None or not math.isfinite(confidence):
        return "none"
    p = math.exp(confidence)
    return "high" if p >= HIGH else "medium" if p >= MEDIUM else "low"


def confidence_colour(confidence: float | None) -> str:
    return COLOURS[confidence_band(confidence)]


def probability(confidence: float | None) -> float | None:
    if confidence is None or not math.isfinite(confidence):
        return None
    return math.exp(confidence)


def _rect(cls: str, box: list[int], colour: str | None, title: str) -> str:
    x0, y0, x1, y1 = box
    paint = f' stroke="{colour}" fill="{colour}"' if colour else ""
    return (f'<rect class="{cls}" x="{x0}" y="{y0}" width="{max(1, x1 - x0)}" height="{max(1, y1 - y0)}"{paint}>'
            f"<title>{esc(title)}</title></rect>")


def page_svg(background_uri: str, size: tuple[int, int], records: list[dict[str, Any]], *, document: str,
             page: int) -> str:
    """An SVG of the page (an inlined image) with a rectangle per line, word and token record.

    The view box is in page pixels, the coordinates the records' boxes are in, whatever size the
    background image was shrunk to.
    """
    w, h = size
    parts = [f'<svg class="page" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
             f'data-document="{esc(document)}" data-page="{page}" role="img" '
             f'aria-label="{esc(document)} page {page} with line boxes">',
             f'<image href="{background_uri}" x="0" y="0" width="{w}" height="{h}" preserveAspectRatio="none"/>',
             '<g class="lines">']
    for r in records:
        p = probability(r.get("confidence"))
        conf = f"p≈{p:.2f}" if p is not None else "no confidence"
        parts.append(_rect("line", r["box"], confidence_colour(r.get("confidence")),
                           f"line {r['line']} ({conf}): {r.get('text', '')}"))
    parts.append('</g><g class="words">')
    for r in records:
        for word in r.get("words", []):
            parts.append(_rect("word", word["box"], None, f"{word['text']} (log-prob {word['logprob']:.3f})"))
    parts.append('</g><g class="tokens">')
    for r in records:
        for token in r.get("tokens", []):
            parts.append(_rect("token", token["box"], None, f"{token['text']!r} (log-prob {token['logprob']:.3f})"))
    parts.append("</g></svg>")
    return "".join(parts)


def burn_boxes(image: Any, records: list[dict[str, Any]], max_side: int = 900) -> Any:
    """The page (RGB, shrunk to ``max_side``) with the line boxes drawn in their confidence colours."""
    from PIL import ImageDraw

    page = image.convert("RGB")
    scale = min(1.0, max_side / max(page.size))
    if scale < 1.0:
        page = page.resize((max(1, round(page.width * scale)), max(1, round(page.height * scale))))
    draw = ImageDraw.Draw(page)
    width = max(1, round(3 * scale))
    for r in records:
        x0, y0, x1, y1 = (round(v * scale) for v in r["box"])
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=confidence_colour(r.get("confidence")),
                       width=width)
    return page


def crop(image: Any, box: list[int], height: int = 40) -> Any:
    """The line at ``box``, scaled to ``height`` pixels (wide lines are capped at 12x that)."""
    x0, y0, x1, y1 = box
    piece = image.crop((max(0, x0), max(0, y0), min(image.width, x1), min(image.height, y1)))
    if piece.height == 0 or piece.width == 0:
        return piece
    scale = height / piece.height
    size = (max(1, min(round(piece.width * scale), height * 12)), height)
    return piece.resize(size)


def contact_sheet(images: list[Any], columns: int = 8, thumb: int = 96) -> Any:
    """Thumbnails of ``images`` in a grid (the sampling stage's grid function, on thumbnails)."""
    from PIL import Image, ImageOps

    from inkbooth.dreambooth.sample import grid

    thumbs = []
    for img in images:
        t = ImageOps.contain(img.convert("RGB"), (thumb, thumb))
        square = Image.new("RGB", (thumb, thumb), "white")
        square.paste(t, ((thumb - t.width) // 2, (thumb - t.height) // 2))
        thumbs.append(square)
    return grid(thumbs, min(columns, len(thumbs)))


def loss_curve_png(history: list[dict[str, Any]], keys: tuple[str, ...] = ("loss", "instance_loss", "prior_loss"),
                   title: str = "training loss") -> bytes:
    """The logged losses against the step, one marker per logged step, as PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    steps = [h["step"] for h in history]
    for key in keys:
        values = [h.get(key) for h in history]
        if all(v is None for v in values):
            continue
        ax.plot(steps, [math.nan if v is None else v for v in values], marker="o", markersize=3.5,
                linewidth=1.4 if key == "loss" else 1.0, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
