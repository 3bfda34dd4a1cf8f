"""The reports built from hostile input: names, prompts and OCR text must show as text, never as markup.

``report.md`` is read by the KFP UI's Markdown viewer (raw HTML off, remote images still fetched)
and by any other Markdown viewer (which runs the rest). Every string from input goes through one
escaping helper (``inkbooth.reports.page.md_escape``), so the Markdown holds no HTML tag, link or
remote image from input, a table row stays one row with its header's cells, and the text is still
there, escaped. The OCR report also stays under the UI's 400,000 characters at 10,000 documents.

The reports are built on synthetic artifacts (results, a model version, samples, a class-image
set) published in a temporary folder: no model runs here.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from inkbooth import artifacts, reports
from inkbooth.ocr.batch.results import json_line, json_text

KFP_MARKDOWN_LIMIT = 400_000  # the KFP UI's Markdown viewer cuts text past this

SURROGATE_NAME = "caf\udce9.png"  # a file name that is not UTF-8, as the code holds it (surrogateescape)
LONG = "x" * 100_000 + "END"

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "![p](http://evil.example/p.png)",
    "<http://evil.example/autolink>",
    "[ref]: javascript:alert(2)",
    "a|b",
    "line1\nline2",
    "cr\rlf\r\nend\u2028sep",
    "**bold** __strong__ _it_ ~~strike~~",
    "`code` ``two`` ```three",
    "# not a heading {#id} !bang",
    "&lt;already-escaped&gt; & amp",
    "back\\slash\\",
    "1. not a list",
    "- not a bullet",
    SURROGATE_NAME,
    LONG,
]


def shown(value: str) -> str:
    """What a reader should see of ``value``: whitespace runs as one space, a lone surrogate as its byte."""
    text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in value)
    return re.sub(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+", " ", text).strip()


# ---- reading the Markdown ------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: a backslash before ASCII punctuation


def without_escapes(md: str) -> str:
    """The Markdown with every backslash escape (and what it escapes) removed: what is left is syntax."""
    return _ESCAPE.sub("", md)


def visible_text(md: str) -> str:
    """The text a CommonMark viewer shows: escapes resolved, entities decoded."""
    return html.unescape(_ESCAPE.sub(r"\1", md))


def table_rows(md: str) -> list[list[str]]:
    """Every table, as its lines (header, separator, rows), found the way GFM finds them."""
    lines = re.split(r"\r\n|\r|\n", md)
    tables, i = [], 0
    separator = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and separator.match(lines[i + 1]):
            table = [lines[i], lines[i + 1]]
            i += 2
            while i < len(lines) and lines[i].strip():
                table.append(lines[i])
                i += 1
            tables.append(table)
        i += 1
    return tables


def cells(line: str) -> int:
    bare = without_escapes(line).strip()
    assert bare.startswith("|") and bare.endswith("|"), f"a table line not closed by pipes: {line[:120]!r}"
    return bare.count("|") - 1


class _Rendered(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    handle_startendtag = handle_starttag


SAFE_TAGS = {"h1", "h2", "h3", "p", "strong", "em", "br", "table", "thead", "tbody", "tr", "th", "td", "img", "code"}


def assert_safe_markdown(md: str, hostile: list[str]) -> None:
    """No HTML, link or remote image from input; tables whole; every hostile string still visible."""
    md.encode("utf-8")  # writable as report.md: no lone surrogate left
    assert "\r" not in md and "\u2028" not in md, "a line break from input"
    assert "<" not in md, f"raw HTML (or an autolink) in the Markdown: {md[md.index('<'):][:80]!r}"
    bare = without_escapes(md)
    images = re.findall(r"!\[[^\[\]]*\]\(([^()\s]*)\)", bare)
    assert bare.count("![") == len(images), "an image whose alt text broke out of its brackets"
    assert all(re.fullmatch(r"data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+", uri) for uri in images), \
        [uri[:60] for uri in images if not uri.startswith("data:image/")]
    rest = re.sub(r"!\[[^\[\]]*\]\([^()\s]*\)", "", bare)
    assert "](" not in rest and "][" not in rest, "a link from input"
    assert not re.search(r"^\s{0,3}\[[^\]]*\]:", rest, re.M), "a link reference definition from input"
    for table in table_rows(md):
        header = cells(table[0])
        for line in table[1:]:
            assert cells(line) == header, f"a row with {cells(line)} cells under a header of {header}: {line[:160]!r}"
    text = visible_text(md)
    for value in hostile:
        want = shown(value)
        assert want[:300] in text, f"{value[:60]!r} is not visible in the Markdown"
    _assert_rendered_safely(md)


def _assert_rendered_safely(md: str) -> None:
    """Render with Python-Markdown (raw HTML passes through it) where installed, and look at the tags."""
    try:
        import markdown
    except ImportError:  # the regex checks above stand alone
        return
    rendered = _Rendered(markdown.markdown(md, extensions=["tables"]))
    for tag, attrs in rendered.tags:
        assert tag in SAFE_TAGS, f"<{tag}> in the rendered Markdown"
        assert not [k for k in attrs if k.startswith("on")], f"<{tag} {attrs}>"
        if tag == "img":
            assert attrs["src"].startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), attrs["src"][:60]


def assert_safe_html(text: str) -> None:
    text.encode("utf-8")
    tags = _Rendered(text).tags
    assert "script" not in {t for t, _ in tags}
    for tag, attrs in tags:
        assert not [k for k in attrs if k.startswith("on")], f"<{tag} {attrs}>"
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), f"<{tag} {key}={attrs[key][:60]}>"


# ---- synthetic artifacts -------------------------------------------------------------------------


def _png(path: Path, size: tuple[int, int] = (200, 120)) -> Path:
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle((10, 10, 150, 40), fill="black")
    image.save(path)
    return path


def _line(doc: str, i: int, text: str, confidence: float) -> dict:
    return {"document": doc, "page": 1, "line": i, "box": [10, 10, 150, 40], "text": text, "confidence": confidence,
            "words": [{"text": text, "box": [10, 10, 80, 40], "logprob": -0.1}],
            "tokens": [{"text": text, "box": [10, 10, 40, 40], "logprob": -0.1}]}


def publish_ocr_results(root: Path, records: list[dict], summary: dict, documents: str | None = None) -> str:
    """An ``ocr-results`` artifact holding ``records`` (written as the merge writes them) and ``summary``."""
    src = root / "results-src"
    src.mkdir(parents=True)
    with open(src / "results.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json_line(r))
    (src / "report.json").write_text(json_text(summary), encoding="utf-8")
    uri = str(root / "ocr" / "results")
    artifacts.publish(src, uri, kind="ocr-results", inputs={"documents": documents} if documents else {})
    return uri


# File names a folder can hold: these documents exist, so their pages are drawn (heading, image alt).
DRAWN = ["<img src=x onerror=alert(1)>.png", "[x](javascript:alert(1)).png", "a|b **bold** `tick` #1.png"]


@pytest.fixture(scope="module")
def hostile_ocr(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-ocr")
    docs = root / "documents"
    for name in DRAWN:
        _png(docs / name)
    records, cer = [], {}
    for i, name in enumerate(DRAWN):
        records.append(_line(name, 0, HOSTILE[i % len(HOSTILE)], -0.01 * i))
    for i, value in enumerate(HOSTILE):
        doc = value if value != LONG else "d/" + LONG  # not on disk: named in tables and headings
        records.append(_line(doc, 0, value, -5.0 - i))  # the least confident lines: every text in that table
        cer[doc] = 0.5
        records.append({"document": f"err-{i}-{value}", "page": None, "line": None, "status": "error",
                        "error": f"{value}: cannot be decoded"})
    summary = {"documents": len(records), "documents_ok": len(DRAWN), "documents_failed": len(HOSTILE), "lines": 10,
               "cer": 0.5, "cer_documents": cer}
    return publish_ocr_results(root, records, summary, documents=str(docs))


def test_ocr_report_from_hostile_names_and_text_is_escaped(hostile_ocr, tmp_path):
    from inkbooth.reports.ocr import ocr_report

    page = ocr_report(hostile_ocr, lowest=len(HOSTILE) + len(DRAWN))
    md = page.markdown()
    assert_safe_markdown(md, HOSTILE + [f"err-3-{HOSTILE[3]}"] + DRAWN)
    assert md.count("](data:image/png;base64,") == len(DRAWN), "the drawn pages are images of the report's own"
    assert_safe_html(page.html())
    written = reports.write(page, tmp_path / "out")  # UTF-8 files, a lone surrogate included
    assert "caf\\\\xe9" in written["markdown"].read_text(encoding="utf-8")
    assert "caf\\xe9" in written["html"].read_text(encoding="utf-8")


def test_a_very_long_input_string_is_cut_not_dropped(hostile_ocr):
    from inkbooth.reports.ocr import ocr_report

    md = ocr_report(hostile_ocr, lowest=len(HOSTILE) + len(DRAWN)).markdown()
    assert "x" * 500 in md and "END" not in md, "the start is shown, the rest cut"
    assert len(md) < 100_000


# ---- DreamBooth ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_dreambooth(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-db")
    classes = root / "class-src"
    for i in range(3):
        _png(classes / f"{i}.png", (32, 32))
    class_uri = str(root / "class-images")
    artifacts.publish(classes, class_uri, kind="class-images", config={"prompt": "class " + HOSTILE[1] + HOSTILE[3]})

    version = root / "version-src"
    for step in (2, 4):
        for i in range(2):
            _png(version / "validation" / f"step-{step}" / f"{i}.png", (32, 32))
    training = {
        "config": {"train": {"instance_prompt": "a photo of sks " + HOSTILE[0],
                             "validation_prompts": [HOSTILE[2], HOSTILE[6] + HOSTILE[7]]}},
        "metrics": {"loss": 0.25, "steps": 4, HOSTILE[11]: HOSTILE[9], "note": SURROGATE_NAME},
        "lineage": {"base_model": "<img src=x onerror=alert(1)> model", "instance_images": HOSTILE[3],
                    "class_images": class_uri},
        "history": [{"step": 2, "loss": 0.5}, {"step": 4, "loss": 0.25}],
    }
    (version / "training.json").write_text(json.dumps(training), encoding="utf-8")  # \udce9 as an escape
    model_uri = str(root / "registry" / "m" / "v1")
    artifacts.publish(version, model_uri, kind="dreambooth-export", name="<script>alert(1)</script>", version="v1")

    samples = root / "samples-src"
    index = []
    for p, prompt in enumerate([HOSTILE[3], HOSTILE[4] + " " + HOSTILE[11], LONG]):
        _png(samples / f"{p}.png", (32, 32))
        index.append({"prompt": prompt, "image": 0, "file": f"{p}.png"})
    (samples / "samples.json").write_text(json.dumps(index), encoding="utf-8")
    _png(samples / "grid.png", (96, 32))
    samples_uri = str(root / "samples")
    artifacts.publish(samples, samples_uri, kind="dreambooth-samples")
    return model_uri, samples_uri


def test_dreambooth_report_from_hostile_prompts_and_names_is_escaped(hostile_dreambooth, tmp_path):
    from inkbooth.reports.dreambooth import dreambooth_report

    model_uri, samples_uri = hostile_dreambooth
    page = dreambooth_report(model_uri, samples=samples_uri)
    md = page.markdown()
    assert_safe_markdown(md, ["<script>alert(1)</script>", "a photo of sks " + HOSTILE[0], HOSTILE[2],
                              HOSTILE[6] + HOSTILE[7], HOSTILE[11], HOSTILE[9], SURROGATE_NAME,
                              "<img src=x onerror=alert(1)> model", "class " + HOSTILE[1] + HOSTILE[3],
                              HOSTILE[4] + " " + HOSTILE[11], LONG])
    for alt in ("training loss curve", "sample grid", "class-image contact sheet"):
        assert f"![{alt}](data:image/png;base64," in md
    assert_safe_html(page.html())
    reports.write(page, tmp_path / "out")


# ---- the helper itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_every_hostile_string_is_one_line_of_plain_text(value):
    from inkbooth.reports.page import md_escape

    out = md_escape(value)
    assert "\n" not in out and "\r" not in out and "<" not in out
    bare = without_escapes(out)
    assert not re.search(r"[\[\]()`*_|!#{}<>~\\]", bare), bare[:80]
    assert shown(value)[:300] in visible_text(out)


def test_the_page_refuses_an_image_that_is_not_its_own_data():
    from inkbooth.reports.page import Page

    page = Page("t", kind="test")
    with pytest.raises(ValueError):
        page.image(b"x", "remote", mime="image/png)![p](http://evil.example/p.png")
    with pytest.raises(ValueError):
        page.image(b"x", "svg", mime="image/svg+xml")  # an SVG image may carry script


# ---- size ----------------------------------------------------------------------------------------

DOCUMENTS = 10_000


@pytest.fixture(scope="module")
def ten_thousand_documents(tmp_path_factory):
    root = tmp_path_factory.mktemp("many-docs")
    names = [f"scans/2026-11/batch-{i // 500:03d}/invoice-{i:06d}-scanned-at-the-front-desk.png"
             for i in range(DOCUMENTS)]
    records = [_line(n, 0, f"Invoice number {i:06d}, total 1,234.56 EUR", -0.001 * (i % 700))
               for i, n in enumerate(names)]
    cer = {n: round((i * 7919 % DOCUMENTS) / DOCUMENTS, 4) for i, n in enumerate(names)}
    summary = {"documents": DOCUMENTS, "documents_ok": DOCUMENTS, "documents_failed": 0, "lines": DOCUMENTS,
               "cer": 0.1, "cer_documents": cer}
    return publish_ocr_results(root, records, summary), names, cer


def test_the_ocr_report_of_10000_documents_stays_under_the_kfp_limit(ten_thousand_documents):
    from inkbooth.reports.ocr import DOCUMENT_ROWS, ocr_report

    results, names, cer = ten_thousand_documents
    page = ocr_report(results)
    md, text = page.markdown(), page.html()
    assert len(md) < KFP_MARKDOWN_LIMIT, f"{len(md):,} characters"
    assert len(text) < 1_000_000, f"HTML {len(text):,} bytes"
    left_out = DOCUMENTS - DOCUMENT_ROWS
    assert f"the other {left_out:,}" in visible_text(md) and f"the other {left_out:,}" in text
    documents_table = md[md.index("## Documents"):]
    worst, best = max(names, key=lambda n: cer[n]), min(names, key=lambda n: cer[n])
    assert worst in documents_table and best not in documents_table, "the worst documents are the ones shown"
    assert len(table_rows(documents_table)[0]) == 2 + DOCUMENT_ROWS
    assert "left out of the Markdown" not in documents_table, "the cap, not the budget, limits the table"


def test_a_table_never_takes_the_markdown_past_its_budget():
    from inkbooth.reports.page import MARKDOWN_BUDGET, Page

    page = Page("big", kind="test")
    page.table(["name", "text"], [[f"row {i}", "<&>" * 300] for i in range(5_000)])
    page.paragraph("after the table")
    md = page.markdown()
    assert len(md) <= MARKDOWN_BUDGET + 10_000, len(md)
    assert "more rows left out of the Markdown" in md and md.rstrip().endswith("after the table")
    [table] = table_rows(md)
    assert all(cells(line) == 2 for line in table)


def test_the_markdown_is_cut_at_a_line_below_the_kfp_limit_whatever_comes_after_a_full_table():
    from inkbooth.reports.page import MARKDOWN_LIMIT, Page

    page = Page("big", kind="test")
    page.table(["text"], [["&" * 900] for _ in range(2_000)])
    for i in range(40):
        page.heading(f"part {i} " + "<" * 2_000, level=3)
        page.paragraph("&" * 2_000)
    md = page.markdown()
    assert len(md) < MARKDOWN_LIMIT
    assert md.rstrip().endswith("the HTML report has it all)*")
    assert_safe_markdown(md, [])
