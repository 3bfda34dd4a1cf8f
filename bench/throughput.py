"""Batch OCR throughput at steady state: pages per CPU-second of one worker, ours against Tesseract, with CER.

A shard worker loads once and then reads many documents. This benchmark times the two apart, for us
and for Tesseract, on the same pages:

* ``ours``: one fresh process per round. Start-up (the interpreter, the imports of torch, transformers
  and ONNX Runtime, the reader's export and its sessions) is timed apart; then the worker reads every
  document of each set through the shard's own per-document path (``inkbooth.ocr.batch.shard``:
  pages, segmentation, lines batched across a document's pages, recognizer, records), one document
  after another with the same recognizer, its first document read once before the clock starts.
* ``tesseract-page``: ``tesseract PAGE - --psm 3 tsv``, one process per page (its start-up paid per page);
* ``tesseract-list``: ``tesseract LIST - --psm 3 tsv``, one process for all the pages of a set (its
  start-up paid once), which is how Tesseract reads a batch; its start-up alone (a blank image) is
  reported apart.

The sets: the demo documents (``inkbooth.demo.make_documents``, one copy per ``--seeds`` seed, in the
fonts of ``.inkbooth/fonts``), scored like the pipeline scores them (each page's text against its
transcript); and the held-out reading documents (``tests/readset.tsv``, fetched by ``make testdata``),
their listed pages cut into a PDF per document that we read as the pipeline does (rendered at
``--dpi``), scored against the text layer like ``bench/reading.py``. Tesseract reads the same page
images as PNG (the pipeline's renderings, with their resolution). Everything runs on one thread
(``OMP_NUM_THREADS=1``, ``OMP_THREAD_LIMIT=1``). Times are CPU seconds (user + system, Tesseract's
from its processes' rusage), so other work on the machine counts less; rounds are interleaved;
medians and min-max spread; ratios per round.

    python bench/throughput.py [--rounds 3] [--seeds 7,8,9] [--docs mnras,sigconf] [--configs 'default;num_beams=1']

``--configs``: our recognizer's settings to compare, ``;``-separated, each ``key=value,...`` over the
defaults of ``RecognizeConfig`` (``default``: the defaults themselves).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # Tesseract's, for the processes this one starts
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, peak_rss_mb, run_child, summary  # noqa: E402
from bench.reading import READSET, TESTDATA, edits, readset, render, score_page, truth  # noqa: E402
from inkbooth.ocr.documents.labels import records as jsonl_records  # noqa: E402

SETS = ("demo", "heldout")
TESSERACT = ("tesseract-page", "tesseract-list")
Box = tuple[float, float, float, float]


def prepare(work: Path, seeds: list[int], names: list[str] | None, dpi: int, fonts: str) -> dict:
    """Write both sets' documents, their page images (PNG) and truths under ``work``; returns the corpus."""
    import pypdfium2 as pdfium

    from inkbooth import demo
    from inkbooth.ocr.documents.pages import PagesConfig, load_pages

    pages_config = PagesConfig(pdf_dpi=dpi)
    corpus: dict[str, list[dict]] = {"demo": [], "heldout": []}
    for seed in seeds:
        folder = work / f"demo-{seed}"
        demo.make_documents(folder, seed=seed, fonts=demo.document_fonts(fonts))
        for path in sorted((folder / "documents").iterdir()):
            if path.name == "corrupt.png":  # an error record, not a page
                continue
            texts = (folder / "ground-truth" / f"{path.name}.txt").read_text(encoding="utf-8").split("\f\n")
            doc = {"name": f"{seed}/{path.name}", "path": str(path), "pages": []}
            for page, text in zip(load_pages(path, path.name, pages_config), texts):
                png = folder / "pages" / f"{path.name}-{page.index + 1}.png"
                png.parent.mkdir(exist_ok=True)
                # make_documents draws A4 pages 1240 px wide (150 dpi); its PDF is rendered at pdf_dpi.
                res = dpi if path.suffix == ".pdf" else 150
                page.image.save(png, dpi=(res, res))
                doc["pages"].append({"png": str(png), "text": text})
            corpus["demo"].append(doc)
    held = work / "heldout"
    held.mkdir(exist_ok=True)
    for entry in readset(names, READSET):
        source = TESTDATA / entry["file"]
        if not source.is_file():
            print(f"throughput: {source} is missing (make testdata); skipped", file=sys.stderr)
            continue
        pdf = pdfium.PdfDocument(str(source))
        cut = pdfium.PdfDocument.new()
        cut.import_pages(pdf, entry["pages"])
        path = held / f"{entry['name']}.pdf"
        cut.save(str(path))
        cut.close()
        doc = {"name": entry["name"], "path": str(path), "pages": []}
        for index in entry["pages"]:
            page = pdf[index]
            png = held / f"{entry['name']}-{index + 1}.png"
            render(page, dpi).save(png, dpi=(dpi, dpi))
            true, ignored, _ = truth(page, dpi)
            page.close()
            doc["pages"].append({"png": str(png), "true": true, "ignored": ignored})
        pdf.close()
        corpus["heldout"].append(doc)
    return corpus


def page_edits(set_name: str, page: dict, read: list[tuple[Box, str]]) -> tuple[float, int]:
    """(edits, true characters) of one page read as ``read`` (lines: box, text, in reading order)."""
    if set_name == "demo":  # the pipeline's rule: the page's text against its transcript
        hyp, ref = "\n".join(t for _, t in read), page["text"]
        return edits(hyp, ref), len(" ".join(ref.split()))
    pairs = score_page(read, [(tuple(b), t) for b, t in page["true"]], [tuple(b) for b in page["ignored"]])
    return sum(edits(h, r) for h, r in pairs), sum(len(" ".join(r.split())) for _, r in pairs)


def parse_config(text: str) -> dict:
    """``key=value,...`` over RecognizeConfig's defaults (``default``: none), values as JSON where they parse."""
    out = {}
    for item in filter(None, text.split(",")):
        if item == "default":
            continue
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def child(args: argparse.Namespace) -> None:
    """One worker: start-up timed apart, then every document of each set, one after another."""
    interpreter = time.process_time()  # the interpreter and this module (light: no inkbooth.ocr yet)
    import onnxruntime  # noqa: F401  (what the worker imports anyway, timed as imports)
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from inkbooth import readers
    from inkbooth.ocr.batch.shard import _read_document
    from inkbooth.ocr.recognition.export import reading_export
    from inkbooth.ocr.recognition.recognizer import RecognizeConfig, Recognizer

    imported = time.process_time()
    config = RecognizeConfig(threads=1, **parse_config(args.config))
    config.validate()
    model = str(readers.path(args.model)) if args.model in readers.NAMES else args.model
    recognizer = Recognizer(reading_export(model, threads=1), config)
    loaded = time.process_time()
    corpus = json.loads(Path(args.corpus).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        def read(doc: dict) -> dict[int, list[tuple[Box, str]]]:
            _, records = _read_document(Path(doc["path"]), doc["name"], recognizer, config, Path(tmp))
            pages: dict[int, list[tuple[Box, str]]] = defaultdict(list)
            for _, line in jsonl_records(records.read_text(encoding="utf-8")):  # not splitlines(): U+2028 in a text
                if not line:
                    continue
                rec = json.loads(line)
                if rec.get("text") is not None:
                    pages[rec["page"]].append((tuple(rec["box"]), rec["text"]))
            return pages

        first = next(doc for s in SETS for doc in corpus[s])
        c0 = time.process_time()
        read(first)  # allocators, lazy kernels: start-up too, reported apart
        first_doc = time.process_time() - c0
        sets = {}
        for set_name in SETS:
            docs = corpus[set_name]
            got, c0, w0 = [], time.process_time(), time.perf_counter()
            for doc in docs:
                got.append(read(doc))
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            e = n = lines = pages = 0
            for doc, read_pages in zip(docs, got):
                for k, page in enumerate(doc["pages"]):
                    pe, pn = page_edits(set_name, page, read_pages.get(k + 1, []))
                    e, n, lines, pages = e + pe, n + pn, lines + len(read_pages.get(k + 1, [])), pages + 1
            sets[set_name] = {"pages": pages, "lines": lines, "cpu_s": cpu, "wall_s": wall, "edits": e, "chars": n}
    print("RESULT " + json.dumps({
        "startup": {"interpreter_s": interpreter, "imports_s": imported - interpreter, "load_s": loaded - imported,
                    "first_document_s": first_doc, "total_s": loaded + first_doc},
        "variant": recognizer.config.variant, "sets": sets, "peak_rss_mb": peak_rss_mb()}))


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tesseract_tsv(tsv: str) -> dict[int, list[tuple[Box, str]]]:
    """Tesseract's lines per page (1-based ``page_num``): its level-4 boxes, their words joined."""
    boxes: dict[tuple, Box] = {}
    words: dict[tuple, list[str]] = defaultdict(list)
    for row in tsv.splitlines()[1:]:
        f = row.split("\t")
        if len(f) < 12:
            continue
        key = tuple(int(v) for v in f[1:5])
        x, y, w, h = (int(v) for v in f[6:10])
        if f[0] == "4":
            boxes[key] = (x, y, x + w, y + h)
        elif f[0] == "5" and f[11].strip():
            words[key].append(f[11])
    pages: dict[int, list[tuple[Box, str]]] = defaultdict(list)
    for key, box in boxes.items():
        if words[key]:
            pages[key[0]].append((box, " ".join(words[key])))
    return pages


def tesseract(mode: str, pages: list[dict], lang: str, tmp: Path) -> tuple[float, float, list[list[tuple[Box, str]]]]:
    """(CPU seconds of its processes, wall seconds, lines per page) for one set read in ``mode``."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    c0, w0 = children_cpu(), time.perf_counter()
    if mode == "tesseract-page":
        read = []
        for page in pages:
            out = subprocess.run(["tesseract", page["png"], "-", "-l", lang, "--psm", "3", "tsv"], capture_output=True,
                                 text=True, check=True, env=env).stdout
            read.append(tesseract_tsv(out).get(1, []))
    else:
        listing = tmp / "pages.txt"
        listing.write_text("".join(p["png"] + "\n" for p in pages))
        out = subprocess.run(["tesseract", str(listing), "-", "-l", lang, "--psm", "3", "tsv"], capture_output=True,
                             text=True, check=True, env=env).stdout
        by_page = tesseract_tsv(out)
        read = [by_page.get(k + 1, []) for k in range(len(pages))]
    return children_cpu() - c0, time.perf_counter() - w0, read


def tesseract_startup(lang: str, tmp: Path, times: int = 3) -> float:
    """CPU seconds of one Tesseract process that reads a blank image (its model load and set-up)."""
    from PIL import Image

    blank = tmp / "blank.png"
    Image.new("L", (64, 32), 255).save(blank, dpi=(200, 200))
    c0 = children_cpu()
    for _ in range(times):
        subprocess.run(["tesseract", str(blank), "-", "-l", lang, "--psm", "3", "tsv"], capture_output=True,
                       env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    return (children_cpu() - c0) / times


def run_tesseract(mode: str, corpus: dict, lang: str, tmp: Path) -> dict:
    sets = {}
    for set_name in SETS:
        pages = [p for doc in corpus[set_name] for p in doc["pages"]]
        cpu, wall, read = tesseract(mode, pages, lang, tmp)
        e = n = 0
        for page, lines in zip(pages, read):
            pe, pn = page_edits(set_name, page, lines)
            e, n = e + pe, n + pn
        sets[set_name] = {"pages": len(pages), "lines": sum(map(len, read)), "cpu_s": cpu, "wall_s": wall,
                          "edits": e, "chars": n}
    return {"startup": {"total_s": tesseract_startup(lang, tmp)}, "sets": sets}


def report(runs: dict[str, list[dict]], systems: list[str]) -> tuple[list[dict], str]:
    """Rows (per set and system: medians, spread, ratios against Tesseract per round) and their Markdown table."""
    rows = []
    lines = ["| set | system | pages | pages per CPU-s, steady state, median (min-max) | lines per CPU-s | CER "
             "| start-up CPU s | vs tesseract-page | vs tesseract-list |", "|---|---|---|---|---|---|---|---|---|"]
    for set_name in SETS:
        for system in systems:
            rs = runs[system]
            got = [r["sets"][set_name] for r in rs]
            if not got[0]["pages"]:
                continue
            pps = [g["pages"] / g["cpu_s"] for g in got]
            row = {"set": set_name, "system": system, "pages": got[0]["pages"], "lines": got[0]["lines"],
                   "pages_per_cpu_s": summary(pps), "lines_per_cpu_s": summary([g["lines"] / g["cpu_s"] for g in got]),
                   "cer": summary([g["edits"] / max(1, g["chars"]) for g in got]), "chars": got[0]["chars"],
                   "startup_cpu_s": summary([r["startup"]["total_s"] for r in rs])}
            for base in TESSERACT:
                if base in runs and base != system:
                    row[f"vs_{base}"] = summary([a["sets"][set_name]["cpu_s"] / a["sets"][set_name]["pages"] /
                                                 (b["sets"][set_name]["cpu_s"] / b["sets"][set_name]["pages"])
                                                 for a, b in zip(runs[base], rs)])
            rows.append(row)
            p, lp, c, s = row["pages_per_cpu_s"], row["lines_per_cpu_s"], row["cer"], row["startup_cpu_s"]
            vs = [f"{row[f'vs_{b}']['median']:.2f}x ({row[f'vs_{b}']['min']:.2f}-{row[f'vs_{b}']['max']:.2f})"
                  if f"vs_{b}" in row else "" for b in TESSERACT]
            lines.append(f"| {set_name} | {system} | {row['pages']} | {p['median']:.2f} ({p['min']:.2f}-{p['max']:.2f}) "
                         f"| {lp['median']:.1f} | {c['median']:.4f} | {s['median']:.2f} | {vs[0]} | {vs[1]} |")
    return rows, "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", default="7,8,9", help="one copy of the demo documents per seed")
    ap.add_argument("--docs", default="", help="comma-separated names from tests/readset.tsv (default: all)")
    ap.add_argument("--model", default="printed", help="a reader's name (the demo's: printed), a folder or an export")
    ap.add_argument("--configs", default="default", help="our recognizer settings to compare, ';'-separated")
    ap.add_argument("--no-tesseract", action="store_true")
    ap.add_argument("--tesseract-lang", default="eng")
    ap.add_argument("--dpi", type=int, default=200)
    ap.add_argument("--fonts", default=str(REPO / ".inkbooth" / "fonts"))
    ap.add_argument("--work", help="keep the documents here (made again each run)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "throughput.json"))
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only:
        child(args)
        return
    started, load_before = time.time(), os.getloadavg()
    configs = [c.strip() for c in args.configs.split(";") if c.strip()]
    ours = {("ours" if c == "default" else f"ours {c}"): c for c in configs}
    systems = [*ours, *([] if args.no_tesseract else TESSERACT)]
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        work = Path(args.work) if args.work else tmp
        work.mkdir(parents=True, exist_ok=True)
        corpus = prepare(work, [int(s) for s in args.seeds.split(",") if s],
                         [d for d in args.docs.split(",") if d] or None, args.dpi, args.fonts)
        corpus_file = work / "corpus.json"
        corpus_file.write_text(json.dumps(corpus))
        for r in range(args.rounds):
            for system in systems[r % len(systems):] + systems[:r % len(systems)]:
                if system in ours:
                    cmd = [sys.executable, __file__, "--only", "ours", "--model", args.model, "--config", ours[system],
                           "--corpus", str(corpus_file)]
                    got = run_child(system, cmd, threads=1, extra_env={"OMP_THREAD_LIMIT": "1"})
                else:
                    got = run_tesseract(system, corpus, args.tesseract_lang, tmp)
                runs[system].append(got)
                brief = {s: round(v["pages"] / v["cpu_s"], 3) for s, v in got["sets"].items() if v["pages"]}
                print(f"round {r + 1}/{args.rounds} {system}: pages per CPU-s {brief}", file=sys.stderr)
    rows, table = report(runs, systems)
    m = machine()
    where = (f"CPU {m['cpu']}, {m['cores']} cores ({m['features']}); one thread each; load {' '.join(f'{x:.2f}' for x in load_before)}"
             f" -> {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} interleaved rounds")
    print(f"\n{where}\n\n{table}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": m, "args": {k: v for k, v in vars(args).items() if k not in ("only", "config", "corpus")},
        "minutes": round((time.time() - started) / 60, 1), "where": where, "rows": rows, "table": table,
        "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
