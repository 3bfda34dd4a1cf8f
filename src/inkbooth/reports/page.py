"""A self-contained report page, written as HTML and as Markdown from the same calls.

The HTML has its style inline and every image as a ``data:`` URI: no scripts, fonts, style sheets
or images are fetched from anywhere, so it renders the same from a bucket, a laptop or the KFP
UI's sandboxed iframe. The Markdown is the compact twin for the KFP UI's Markdown viewer, which
renders no raw HTML and cuts text past 400,000 characters: its images go in only while they fit
a budget below that, the rest is said in words; a table stops adding rows to the Markdown at the
budget (saying how many it left out), and the whole is cut at a line before the limit if need be.

Every string a caller gives a page (titles, headings, labels, values, table cells, captions, alt
texts) is input: names, prompts, OCR text. In HTML it goes through ``esc``; in Markdown through
``md_escape``, so it is one line of plain text there: no HTML tag, link, image, emphasis or table
cell of its own. The only links in the Markdown are the page's own images, ``data:`` URIs of
PNG/JPEG/GIF/WebP bytes it encoded itself (``image``); a page never writes a link from input.
Input text is cut at ``TEXT_MAX`` characters in both (the results files keep it whole).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import re
from typing import Any

# The KFP UI's Markdown viewer truncates at 400,000 characters; stay well below it.
MARKDOWN_LIMIT = 400_000
# Tables stop adding rows to the Markdown once it would pass this.
MARKDOWN_BUDGET = 350_000
# Images go into the Markdown only while it stays below this, so that the text after them still fits.
MARKDOWN_IMAGE_BUDGET = 250_000
# A string from input longer than this is cut, with the number of characters it had.
TEXT_MAX = 1000
# The image types a page inlines (an SVG image may carry script: never from input, never inlined).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")

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
    if mime not in IMAGE_TYPES:
        raise ValueError(f"{mime[:40]!r}: a report inlines only {', '.join(IMAGE_TYPES)} images")
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


def printable(value: Any) -> str:
    """``str(value)``, writable as UTF-8: a lone surrogate (a file name that is not UTF-8, held with
    ``surrogateescape``) becomes the text ``\\xNN`` of its byte (other lone surrogates ``\\udNNN``)."""
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(_surrogate(c) if "\ud800" <= c <= "\udfff" else c for c in text)


def _surrogate(c: str) -> str:
    code = ord(c)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def clip(value: Any, limit: int = TEXT_MAX) -> str:
    """``printable(value)``, cut at ``limit`` characters (saying how many it had)."""
    text = printable(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def esc(value: Any) -> str:
    return html.escape(printable(value), quote=True)


# Line breaks (CR too: a row must stay one row), tabs and other control characters.
_MD_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Markdown's and HTML's metacharacters: HTML's as entities (Python-Markdown and others do not take
# a backslash before them), the rest with a backslash (any ASCII punctuation may be escaped).
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_BACKSLASHED = frozenset("\\`*_[](){}#|!~")
# What starts a list item at the start of a line.
_MD_LIST = re.compile(r"^(\d{1,9})([.)])|^([-+])")


def md_escape(value: Any, *, limit: int = TEXT_MAX, line_start: bool = False) -> str:
    """``value`` as one line of plain Markdown text, for a table cell or prose.

    Every character that could start markup is escaped (``& < >`` as entities, ``\\ ` * _ [ ] ( )
    { } # | ! ~`` with a backslash), so no HTML tag, link, image, emphasis, code span, heading or
    table cell comes from ``value``; whitespace runs and control characters (newlines included)
    become one space; a lone surrogate is shown as its byte (``printable``); text past ``limit``
    characters is cut (``clip``). ``line_start``: the text begins a line, so a list marker is escaped too.
    """
    text = clip(_MD_SPACE.sub(" ", printable(value)).strip(), limit)
    out = "".join(_MD_ENTITIES.get(c) or (f"\\{c}" if c in _MD_BACKSLASHED else c) for c in text)
    if line_start:
        out = _MD_LIST.sub(lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(1) else f"\\{m.group(3)}", out, count=1)
    return out


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
        self._add(f"<h{level}{ident}>{esc(clip(text))}</h{level}>", f"{'#' * level} {md_escape(text)}\n")

    def meta(self, label: str, value: Any) -> None:
        self._add(f'<p class="meta"><b>{esc(clip(label))}</b> {esc(clip(value))}</p>',
                  f"**{md_escape(label)}** {md_escape(value)}  \n")

    def paragraph(self, text: str, css: str | None = None) -> None:
        cls = f' class="{esc(css)}"' if css else ""
        self._add(f"<p{cls}>{esc(clip(text))}</p>", f"{md_escape(text, line_start=True)}\n")

    def html_only(self, fragment: str, markdown: str | None = None) -> None:
        """HTML that Markdown cannot carry (an SVG overlay), as given; ``markdown`` says it in words (text, escaped)."""
        self._add(fragment, None if markdown is None else f"{md_escape(markdown, line_start=True)}\n")

    def table(self, headers: list[str], rows: list[list[Any]], *, css: str = "", caption: str | None = None,
              markdown: bool = True) -> None:
        """A table; a cell is a value or a :class:`Cell` (HTML in the page, its text in Markdown).

        In Markdown, rows stop at ``MARKDOWN_BUDGET`` with a line saying how many were left out.
        """
        cls = f' class="{esc(css)}"' if css else ""
        out = [f"<table{cls}>"]
        if caption:
            out.append(f"<caption>{esc(clip(caption))}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{esc(clip(h))}</th>" for h in headers) + "</tr></thead><tbody>")
        md = [(f"*{md_escape(caption)}*\n\n" if caption else "") + f"| {' | '.join(md_escape(h) for h in headers)} |",
              "|" + "---|" * len(headers)]
        md_size, md_left_out = self._md_size + sum(len(line) + 1 for line in md), 0
        for row in rows:
            cells_html, cells_md = [], []
            for value in row:
                cell = value if isinstance(value, Cell) else Cell(_fmt(value), numeric=_is_number(value))
                td = '<td class="num">' if cell.numeric else "<td>"
                cells_html.append(td + (cell.html if cell.html is not None else esc(clip(cell.text))) + "</td>")
                cells_md.append(md_escape(cell.text))
            out.append("<tr>" + "".join(cells_html) + "</tr>")
            if not markdown:
                continue
            line = f"| {' | '.join(cells_md)} |"
            if md_left_out or md_size + len(line) + 1 > MARKDOWN_BUDGET:
                md_left_out += 1
                continue
            md.append(line)
            md_size += len(line) + 1
        out.append("</tbody></table>")
        md_text = None
        if markdown:
            md_text = "\n".join(md) + "\n"
            if md_left_out:
                md_text += (f"\n*({md_left_out:,} more rows left out of the Markdown to keep it under the KFP UI's "
                            f"limit; the HTML report has them)*\n")
        self._add("".join(out), md_text)

    def image(self, data: bytes, alt: str, *, mime: str = "image/png", caption: str | None = None,
              css: str | None = None, attrs: dict[str, Any] | None = None, width: int | None = None,
              markdown: bool = True, html: bool = True) -> None:
        """An inlined image; in Markdown too while it fits the budget (``html=False``: Markdown only)."""
        uri = data_uri(data, mime)
        extra = "".join(f' {esc(k)}="{esc(v)}"' for k, v in (attrs or {}).items())
        cls = f' class="{esc(css)}"' if css else ""
        size = f' width="{int(width)}"' if width else ""
        fig = f'<figure><img{cls} src="{uri}" alt="{esc(clip(alt))}"{size}{extra}>'
        if caption:
            fig += f"<figcaption>{esc(clip(caption))}</figcaption>"
        fig += "</figure>"
        md = None
        if markdown:
            if self._md_size + len(uri) < MARKDOWN_IMAGE_BUDGET:
                md = f"![{md_escape(alt)}]({uri})\n" + (f"\n*{md_escape(caption)}*\n" if caption else "")
            else:
                self.omitted_from_markdown += 1
                md = f"*({md_escape(alt)}: image left out of the Markdown to keep it small; the HTML report has it)*\n"
        self._add(fig if html else "", md)

    def html(self) -> str:
        body = "\n".join(self._html)
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<meta name="generator" content="inkbooth {self.kind} report">'
                f"<title>{esc(clip(self.title))}</title><style>{_STYLE}</style></head>\n"
                f'<body data-report="{esc(self.kind)}">\n<h1>{esc(clip(self.title))}</h1>\n{body}\n</body></html>\n')

    def markdown(self) -> str:
        text = f"# {md_escape(self.title)}\n\n" + "\n".join(self._md)
        if len(text) <= MARKDOWN_LIMIT - 1000:
            return text
        # Only where many parts came after a full table: cut at a line, never inside one.
        return (text[: text.rindex("\n", 0, MARKDOWN_LIMIT - 1000) + 1]
                + "\n*(the rest of this report is left out of the Markdown: the KFP UI shows at most "
                  f"{MARKDOWN_LIMIT:,} characters; the HTML report has it all)*\n")


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
