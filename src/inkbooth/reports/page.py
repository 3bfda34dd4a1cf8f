"""A self-contained report page, written as HTML and as Markdown from the same calls.

The HTML has its style inline and every image as a ``data:`` URI: no scripts, fonts, style sheets
or images are fetched from anywhere, so it renders the same from a bucket, a laptop or the KFP
UI's sandboxed iframe. The Markdown is the compact twin for the KFP UI's Markdown viewer, which
renders no raw HTML and cuts text past 400,000 characters: its images go in only while they fit
a budget below that, the rest is said in words.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from typing import Any

# The KFP UI's Markdown viewer truncates at 400,000 characters; stay well below it.
MARKDOWN_BUDGET = 350_000

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 24px;
       max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.meta { color: #555; margin: 2px 0; word-break: break-all; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { image-rendering: auto; }
figure { margin: 8px 0 16px; } figcaption { color: #555; font-size: 13px; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin: 0 4px 0 10px; }
svg.page { border: 1px solid #ccc; width: 860px; max-width: 100%; height: auto; background: #fff; }
svg.page rect.line { fill-opacity: 0.10; stroke-width: 3; }
svg.page rect.word { fill: none; stroke: #2b6cb0; stroke-width: 1.5; stroke-dasharray: 6 3; }
svg.page rect.token { fill: none; stroke: #805ad5; stroke-width: 1; display: none; }
input.toggle:checked ~ figure svg.page rect.token { display: inline; }
img.sample, img.validation { width: 128px; height: auto; margin: 2px; }
img.crop { max-width: 520px; }
.muted { color: #777; }
.ok { color: #276749; } .bad { color: #c53030; }
"""


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_bytes(image: Any, max_side: int | None = None) -> bytes:
    """A Pillow image as PNG bytes, shrunk so that its longer side is at most ``max_side``."""
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def jpeg_bytes(image: Any, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    image.convert("L" if image.mode in ("1", "L") else "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


@dataclasses.dataclass
class Cell:
    """A table cell: text, or HTML with the text that stands for it in Markdown."""

    text: str
    html: str | None = None
    numeric: bool = False


class Page:
    """Collects a report's parts; ``html()`` and ``markdown()`` render them."""

    def __init__(self, title: str, *, kind: str) -> None:
        self.title = title
        self.kind = kind
        self._html: list[str] = []
        self._md: list[str] = []
        self._md_size = 0
        self.omitted_from_markdown = 0

    def _add(self, html_part: str, md_part: str | None) -> None:
        self._html.append(html_part)
        if md_part is not None:
            self._md.append(md_part)
            self._md_size += len(md_part)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{esc(anchor)}"' if anchor else ""
        self._add(f"<h{level}{ident}>{esc(text)}</h{level}>", f"{'#' * level} {text}\n")

    def meta(self, label: str, value: Any) -> None:
        self._add(f'<p class="meta"><b>{esc(label)}</b> {esc(value)}</p>', f"**{label}** `{value}`  \n")

    def paragraph(self, text: str, css: str | None = None) -> None:
        cls = f' class="{esc(css)}"' if css else ""
        self._add(f"<p{cls}>{esc(text)}</p>", f"{text}\n")

    def html_only(self, fragment: str, markdown: str | None = None) -> None:
        """HTML that Markdown cannot carry (an SVG overlay); ``markdown`` says it in words."""
        self._add(fragment, markdown)

    def table(self, headers: list[str], rows: list[list[Any]], *, css: str = "", caption: str | None = None,
              markdown: bool = True) -> None:
        """A table; a cell is a value or a :class:`Cell` (HTML in the page, its text in Markdown)."""
        cls = f' class="{esc(css)}"' if css else ""
        out = [f"<table{cls}>"]
        if caption:
            out.append(f"<caption>{esc(caption)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>")
        md = [f"| {' | '.join(_md_cell(h) for h in headers)} |", "|" + "---|" * len(headers)]
        for row in rows:
            cells_html, cells_md = [], []
            for value in row:
                cell = value if isinstance(value, Cell) else Cell(_fmt(value), numeric=_is_number(value))
                td = '<td class="num">' if cell.numeric else "<td>"
                cells_html.append(td + (cell.html if cell.html is not None else esc(cell.text)) + "</td>")
                cells_md.append(_md_cell(cell.text))
            out.append("<tr>" + "".join(cells_html) + "</tr>")
            md.append(f"| {' | '.join(cells_md)} |")
        out.append("</tbody></table>")
        md_text = ((f"*{caption}*\n\n" if caption else "") + "\n".join(md) + "\n") if markdown else None
        self._add("".join(out), md_text)

    def image(self, data: bytes, alt: str, *, mime: str = "image/png", caption: str | None = None,
              css: str | None = None, attrs: dict[str, Any] | None = None, width: int | None = None,
              markdown: bool = True, html: bool = True) -> None:
        """An inlined image; in Markdown too while it fits the budget (``html=False``: Markdown only)."""
        uri = data_uri(data, mime)
        extra = "".join(f' {esc(k)}="{esc(v)}"' for k, v in (attrs or {}).items())
        cls = f' class="{esc(css)}"' if css else ""
        size = f' width="{int(width)}"' if width else ""
        fig = f'<figure><img{cls} src="{uri}" alt="{esc(alt)}"{size}{extra}>'
        if caption:
            fig += f"<figcaption>{esc(caption)}</figcaption>"
        fig += "</figure>"
        md = None
        if markdown:
            if self._md_size + len(uri) < MARKDOWN_BUDGET:
                md = f"![{alt}]({uri})\n" + (f"\n*{caption}*\n" if caption else "")
            else:
                self.omitted_from_markdown += 1
                md = f"*({alt}: image left out of the Markdown to keep it small; the HTML report has it)*\n"
        self._add(fig if html else "", md)

    def html(self) -> str:
        body = "\n".join(self._html)
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<meta name="generator" content="inkbooth {self.kind} report">'
                f"<title>{esc(self.title)}</title><style>{_STYLE}</style></head>\n"
                f'<body data-report="{esc(self.kind)}">\n<h1>{esc(self.title)}</h1>\n{body}\n</body></html>\n')

    def markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n".join(self._md)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)
