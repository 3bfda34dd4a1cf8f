"""The demo: both pipelines end to end on this machine, on the embedded object store.

OCR: it uploads the committed Latin reader (``inkbooth.readers``: a tiny TrOCR trained to read the
documents' font) and a set of documents (PNG, JPEG, a multi-page TIFF, an image PDF, and one corrupt
file) with their transcripts to ``s3://inkbooth-demo/``, runs the pipeline through kfp.local at its
defaults (the export's parity gate, beam 4), and checks that every line of every page has a record,
the corrupt file an error record, and the text a CER of at most 5%.

DreamBooth: it personalises the committed drawing model (``inkbooth.drawing``: a small Stable
Diffusion of the real classes that draws a synthetic domain of objects) with 4 pictures of a subject
it has never seen (``subjects.ZIGZAG_BALL``, a white ball with blue zigzag stripes), through class
images -> training (snapshots of the weights along the way) -> evaluation of every kept step by the
committed small CLIP and DINO (subject fidelity, class preservation) -> export and registration of
the step selected -> samples; then it retrains with one subject picture more, which makes a new model
version and reuses the class images. Beside the pipeline it trains the same run without prior
preservation and judges it, to show what the prior term keeps. The figures are printed; a run
whose selected step draws the subject no better than the base model fails the demo.

Each pipeline's visual report (HTML and Markdown, see ``inkbooth.reports``) is written beside its
results; the demo prints where everything is.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

from inkbooth import objectstore, storage

log = logging.getLogger(__name__)

BUCKET = "s3://inkbooth-demo"
MAX_CER = 0.02  # what the reader must read the demo documents at, every font family of them
READER = "printed"  # the committed reader the demo reads with (inkbooth.readers)
# The font family of each demo document: Pillow's bundled sans (Aileron), and where `make fonts` has
# fetched them, Debian's URW Times clone, Latin Modern (TeX's Computer Modern) and DejaVu Serif.
FAMILIES = {"letter.png": ("Aileron", "default"), "receipt.jpg": ("Times (URW Nimbus Roman)", "NimbusRoman-Regular.otf"),
            "scan.tiff": ("Latin Modern Roman", "lmroman10-regular.otf"), "statement.pdf": ("DejaVu Serif", "DejaVuSerif.ttf")}
SAMPLE_LINES = 6  # lines of the first document printed as read, beside the transcript


def document_fonts(fonts_dir: str | Path = ".inkbooth/fonts") -> dict[str, tuple[str, str]]:
    """Each demo document's (family, font): the font file from ``fonts_dir`` where it is there, else
    Pillow's bundled font (and the family says so)."""
    out = {}
    for doc, (family, name) in FAMILIES.items():
        path = Path(fonts_dir) / name
        if name == "default" or path.is_file():
            out[doc] = (family, "default" if name == "default" else str(path))
        else:
            out[doc] = (f"Aileron ({name} not in {fonts_dir}: make fonts)", "default")
    return out


def make_documents(folder: Path, seed: int = 7, fonts: dict[str, tuple[str, str]] | None = None) -> dict[str, int]:
    """Write the demo documents and transcripts; returns the expected line count per document.
    ``fonts``: each document's (family, font file), as ``document_fonts`` gives; Pillow's font for all by default."""
    from inkbooth.ocr.documents import synthetic as synth

    docs, truth = folder / "documents", folder / "ground-truth"
    docs.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    expected: dict[str, int] = {}
    fonts = fonts or {}

    def page(i: int, doc: str = "", **kw: Any) -> synth.SynthPage:
        font = fonts.get(doc, ("", "default"))[1]
        return synth.render_page(seed=seed + i, width=1240, height=1754, size=24, font=font, **kw)

    def write_truth(name: str, pages: list[synth.SynthPage]) -> None:
        (truth / f"{name}.txt").write_text(
            "\f\n".join("\n".join(line.text for line in p.lines) for p in pages) + "\n", encoding="utf-8")
        expected[name] = sum(len(p.lines) for p in pages)

    p = page(0, "letter.png", max_lines=12)
    p.image.save(docs / "letter.png")
    write_truth("letter.png", [p])
    p = page(1, "receipt.jpg", max_lines=10)
    p.image.convert("RGB").save(docs / "receipt.jpg", quality=92)
    write_truth("receipt.jpg", [p])
    multi = [page(2, "scan.tiff", max_lines=8), page(3, "scan.tiff", max_lines=6, columns=2)]
    multi[0].image.save(docs / "scan.tiff", save_all=True, append_images=[multi[1].image], compression="tiff_lzw")
    write_truth("scan.tiff", multi)
    pdf = [page(4, "statement.pdf", max_lines=9), page(5, "statement.pdf", max_lines=7)]
    pdf[0].image.convert("RGB").save(docs / "statement.pdf", save_all=True, append_images=[pdf[1].image.convert("RGB")],
                                     resolution=150)
    write_truth("statement.pdf", pdf)
    buf = io.BytesIO()
    page(6, max_lines=4).image.save(buf, format="PNG")
    (docs / "corrupt.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])  # truncated on purpose
    return expected


def run_demo(workdir: str | Path = ".inkbooth", num_shards: int = 2, pipelines: tuple[str, ...] = ("ocr", "dreambooth"),
             verbose: bool = False, fonts_dir: str | Path = ".inkbooth/fonts") -> dict[str, Any]:
    """Run the demo; returns a summary per pipeline (and prints where the outputs are). Each run
    prints a line per task (``verbose``: every task's log too, see ``runs.run_local``). The OCR
    documents are set in the fonts of ``fonts_dir`` (``make fonts``) where they are there."""
    workdir = Path(workdir).absolute()
    summary: dict[str, Any] = {}
    with objectstore.EmbeddedS3(workdir / "s3") as store, objectstore.environment(store.env()):
        print(f"object store: SeaweedFS at {store.endpoint} (data in {store.data_dir})")
        storage.ensure_bucket(BUCKET)
        if "ocr" in pipelines:
            summary["ocr"] = run_ocr_demo(workdir, num_shards, verbose, fonts_dir)
        if "dreambooth" in pipelines:
            summary["dreambooth"] = run_dreambooth_demo(workdir, verbose)
        print()
        if "ocr" in summary:
            print_summary(summary["ocr"])
        if "dreambooth" in summary:
            print_dreambooth_summary(summary["dreambooth"])
        print(f"  object store    data kept in {store.data_dir}; `inkbooth store start` serves it again")
    return summary


def run_ocr_demo(workdir: Path, num_shards: int, verbose: bool = False,
                 fonts_dir: str | Path = ".inkbooth/fonts") -> dict[str, Any]:
    from inkbooth import artifacts, readers, runs

    local = workdir / "demo"
    local.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fonts = document_fonts(fonts_dir)
    # The printed reader's export draws its parity lines in its training fonts: without them (no
    # `make fonts`) the documents are all in Pillow's font, which the Latin reader reads.
    reader = READER if all(font != "default" for doc, (_, font) in fonts.items() if doc != "letter.png") else "latin"
    model_uri = f"{BUCKET}/models/reader-{reader}"
    storage.upload_dir(readers.path(reader), model_uri)
    expected = make_documents(local, fonts=fonts)
    storage.upload_dir(local / "documents", f"{BUCKET}/documents")
    storage.upload_dir(local / "ground-truth", f"{BUCKET}/ground-truth")
    run = runs.OCRRun(
        model=model_uri, documents=f"{BUCKET}/documents", output=f"{BUCKET}/ocr", num_shards=num_shards,
        ground_truth=f"{BUCKET}/ground-truth",
        # Export and recognition at their defaults: the parity gate's thresholds, beam 4.
    )
    run.validate()
    results_uri = runs.run_local("ocr", run, workdir / "kfp-local", verbose=verbose)
    summary = check_results(results_uri, expected)
    summary["reader"] = reader
    summary["families"] = {doc: (family, summary["report"].get("cer_documents", {}).get(doc))
                           for doc, (family, _) in fonts.items()}
    summary["reports"] = located_reports(results_uri)
    read = artifacts.read_text(results_uri, "text/letter.png.txt").splitlines()
    truth = (local / "ground-truth" / "letter.png.txt").read_text(encoding="utf-8").splitlines()
    summary["sample"] = list(zip(read, truth))[:SAMPLE_LINES]
    onnx_model = _latest(workdir / "kfp-local", "inkbooth-ocr-*/export-trocr/onnx_model-export")  # lineage.beside
    summary["export"] = artifacts.read_manifest(onnx_model).metrics if onnx_model else {}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def located_reports(run_output: str) -> dict[str, Any]:
    """Where the pipeline wrote the report of a run's output (``reports.locate``); checks it is current."""
    from inkbooth import reports

    found = reports.locate(run_output)
    if not found.get("current"):
        raise RuntimeError(f"demo check failed: the pipeline wrote no current report for {run_output}")
    return found


# The demo's DreamBooth run on the drawing model (inkbooth.drawing: 64 x 64 pictures of its domain).
DB_MODEL = "zigzag-ball"  # the subject's folder and the registered model's name
# The text encoder is trained too: with prior preservation, the UNet alone binds "sks" unsteadily on this
# model (a step's DINO swings by 0.2); see tests/test_db_fidelity.py.
DB_STEPS = 100
DB_TRAIN = {"instance_prompt": "a photo of sks ball", "class_prompt": "a photo of a ball", "max_train_steps": DB_STEPS,
            "learning_rate": 1e-4, "train_batch_size": 2, "train_text_encoder": True, "snapshot_every": 20,
            "checkpoint_every": 50, "validation_every": 50, "validation_steps": 20, "log_every": 5, "random_flip": True,
            "validation_prompts": ["a photo of sks ball on a light blue background", "a photo of sks ball at the top left"]}
# Prompts in the domain's words (its text encoder knows no others), the subject in new places.
DB_PROMPTS = ["a photo of {identifier} {cls}", "a photo of {identifier} {cls} on a light blue background",
              "a photo of {identifier} {cls} on a dark gray background", "a photo of {identifier} {cls} at the top left",
              "a photo of {identifier} {cls} at the bottom right",
              "a photo of {identifier} {cls} on a light green gradient background"]
# The last three kept steps judged; the best by DINO among those whose pictures still follow their prompts
# (CLIP-T: the base model's about 0.56, trained steps' 0.47-0.56 as measured, one early step's 0.26).
DB_EVALUATE = {"prompt_set": "custom", "prompts": DB_PROMPTS, "images_per_prompt": 2, "class_images": 8,
               "guidance_scale": 4.0, "only_steps": [60, 80, 100], "select": "best", "metric": {"dino": 1.0},
               "floors": {"clip_t": 0.4}}


def subject_images(folder: Path, n: int, seed: int = 3) -> None:
    """``n`` pictures of one made-up subject (an orange ball on varied backgrounds)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bg = tuple(rng.randint(40, 220) for _ in range(3))
        img = Image.new("RGB", (64, 64), bg)
        x, y, r = rng.randint(18, 46), rng.randint(18, 46), rng.randint(10, 16)
        ImageDraw.Draw(img).ellipse((x - r, y - r, x + r, y + r), fill=(230, 120, 30), outline=(90, 40, 10))
        img.save(folder / f"subject-{i:02d}.png")


def _upload_model(name: str, uri: str) -> str:
    from inkbooth import drawing

    storage.upload_dir(drawing.path(name), uri)
    return uri


def run_dreambooth_demo(workdir: Path, verbose: bool = False) -> dict[str, Any]:
    from inkbooth import artifacts, runs
    from inkbooth.drawing import subjects

    local = workdir / "demo"
    started = time.perf_counter()
    base = _upload_model("shapes", f"{BUCKET}/models/shapes")
    judges = {"clip_model": _upload_model("shapes-clip", f"{BUCKET}/models/shapes-clip"),
              "dino_model": _upload_model("shapes-dino", f"{BUCKET}/models/shapes-dino")}
    pictures = subjects.pictures(5)
    (local / "subject").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(pictures[:4]):
        img.save(local / "subject" / f"subject-{i:02d}.png")
    storage.upload_dir(local / "subject", f"{BUCKET}/subjects/{DB_MODEL}")
    run = runs.DreamBoothRun(
        base_model=base, instance_images=f"{BUCKET}/subjects/{DB_MODEL}",
        prior_output=f"{BUCKET}/class-images", registry=f"{BUCKET}/models/registry", prior_shards=2,
        prior={"num_images": 16, "guidance_scale": 4.0, "batch_size": 8}, train=DB_TRAIN,
        evaluate={**DB_EVALUATE, **judges}, export={"name": DB_MODEL},
        sample={"prompts": [t.format(identifier="sks", cls="ball") for t in DB_PROMPTS[1:5]] + ["a photo of a ball"],
                "images_per_prompt": 4, "steps": 20, "guidance_scale": 4.0},
    )
    run.validate()
    first = runs.run_local("dreambooth", run, workdir / "kfp-local", verbose=verbose)
    prior_sets = [k for k in storage.list_files(f"{BUCKET}/class-images") if k.endswith(artifacts.MANIFEST)]
    # Retraining with one more subject picture: a new version; the class images are reused.
    buf = io.BytesIO()
    pictures[4].save(buf, format="PNG")
    storage.write_bytes(f"{BUCKET}/subjects/{DB_MODEL}/subject-new.png", buf.getvalue())
    second = runs.run_local("dreambooth", run, workdir / "kfp-local", verbose=verbose)
    if first == second:
        raise RuntimeError("demo check failed: retraining with a new subject image did not make a new version")
    prior_after = [k for k in storage.list_files(f"{BUCKET}/class-images") if k.endswith(artifacts.MANIFEST)]
    if prior_after != prior_sets:
        raise RuntimeError("demo check failed: the retrain made new class images instead of reusing them")
    manifest = artifacts.read_manifest(second)
    record = json.loads(artifacts.read_text(second, "evaluation/evaluation.json"))
    without = without_prior(workdir, run, judges)
    base_row, chosen = record["rows"][0], next(r for r in record["rows"][1:] if r["step"] == record["selected"]["step"])
    if chosen["dino"] <= base_row["dino"]:
        raise RuntimeError(f"demo check failed: the registered step's DINO {chosen['dino']} is not above the base "
                           f"model's {base_row['dino']}: the run did not learn the subject")
    samples = _latest(workdir / "kfp-local", "inkbooth-dreambooth-*/sample-model/samples")
    return {"versions": [first, second], "single_file": f"{second}/{DB_MODEL}.safetensors",
            "class_images": storage.join(f"{BUCKET}/class-images", prior_sets[0].split("/")[0]),
            "lineage": manifest.lineage, "seconds": round(time.perf_counter() - started, 1),
            "samples": artifacts.file_uri(samples, "grid.png") if samples else "(not found)",
            "reports": located_reports(second), "base": base_row, "chosen": chosen,
            "last": record["rows"][-1], "selected": record["selected"], "steps": DB_STEPS, "without_prior": without}


def without_prior(workdir: Path, run: Any, judges: dict[str, str]) -> dict[str, Any]:
    """The pipeline's run trained again without the prior term, beside the pipeline (``inkbooth train``
    and ``inkbooth evaluate-dreambooth``, their output in log files there), its last step judged."""
    import subprocess
    import sys

    import yaml

    from inkbooth.dreambooth.evaluate import read_evaluation

    local = workdir / "demo" / "no-prior"
    local.mkdir(parents=True, exist_ok=True)
    train = {**run.train, "with_prior_preservation": False, "snapshot_every": 0, "validation_every": 0,
             "checkpoint_every": 0}
    (local / "train.yaml").write_text(yaml.safe_dump(train), encoding="utf-8")
    (local / "evaluate.yaml").write_text(yaml.safe_dump({**run.evaluate, **judges, "select": "last", "only_steps": []}), encoding="utf-8")
    inkbooth = [sys.executable, "-m", "inkbooth.cli"]
    for name, cmd in (("train", ["train", run.base_model, run.instance_images, str(local / "trained"),
                                 "--config", str(local / "train.yaml"), "--checkpoints", storage.join(BUCKET, "no-prior")]),
                      ("evaluate", ["evaluate-dreambooth", str(local / "trained"), str(local / "evaluation"),
                                    "--config", str(local / "evaluate.yaml")])):
        with open(local / f"{name}.log", "w", encoding="utf-8") as log_file:
            if subprocess.run(inkbooth + cmd, stdout=log_file, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(f"demo: the run without prior preservation failed at {name}; its log: "
                                   f"{local / (name + '.log')}")
    return read_evaluation(str(local / "evaluation"))["rows"][-1]


def _latest(root: Path, pattern: str) -> str | None:
    """The newest artifact folder of a kfp.local run matching ``pattern`` under ``root``."""
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def print_dreambooth_summary(summary: dict[str, Any]) -> None:
    print(f"DreamBooth pipeline finished (two runs) in {summary['seconds']} s")
    print(f"  model versions  {summary['versions'][0]}  then, after adding a subject image, {summary['versions'][1]}")
    print(f"  single file     {summary['single_file']}  (original SD layout, for AUTOMATIC1111/ComfyUI)")
    print(f"  class images    {summary['class_images']}  (made once, reused by the retrain)")
    print(f"  sample grid     {summary['samples']}")
    base, chosen, last, nop = summary["base"], summary["chosen"], summary["last"], summary["without_prior"]

    def fid(r: dict[str, Any]) -> str:
        return f"DINO {r['dino']:.3f}  CLIP-I {r['clip_i']:.3f}  CLIP-T {r['clip_t']:.3f}"

    def cls(r: dict[str, Any]) -> str:
        return (f"similarity to the base's {r['class_similarity']:.3f}, diversity {r['class_diversity']:.3f}, "
                f"DINO to the subject {r['class_subject_dino']:.3f}")
    print(f"  subject fidelity base model  {fid(base)}")
    print(f"                   registered  {fid(chosen)}  (step {chosen['step']} of {summary['steps']}: "
          f"{summary['selected']['reason']})")
    print(f"  class preservation (the class prompt, step {last['step']}) with the prior term: {cls(last)}")
    print(f"                   without it: {cls(nop)}  (base model: diversity {base['class_diversity']:.3f}, "
          f"DINO to the subject {base['class_subject_dino']:.3f})")
    print(f"  report          {summary['reports']['html']}  (and report.md; `inkbooth report {summary['versions'][1]}`)")


def check_results(results_uri: str, expected: dict[str, int], max_cer: float | None = MAX_CER) -> dict[str, Any]:
    """Verify the demo's promises: a record per line, an error record for the corrupt file, and (unless
    ``max_cer`` is None, for a model that does not read) text within ``max_cer`` of the transcripts."""
    from inkbooth import artifacts

    # JSON Lines split at "\n" only: the text may hold U+2028 and the like, which splitlines() splits at.
    records = [json.loads(line) for line in artifacts.read_text(results_uri, "results.jsonl").split("\n") if line]
    report = json.loads(artifacts.read_text(results_uri, "report.json"))
    by_doc: dict[str, int] = {}
    errors = {}
    for r in records:
        if r.get("status") == "error":
            errors[r["document"]] = r["error"]
        else:
            by_doc[r["document"]] = by_doc.get(r["document"], 0) + 1
    problems = [f"{doc}: {by_doc.get(doc, 0)} line records, expected {n}" for doc, n in expected.items()
                if by_doc.get(doc, 0) != n]
    if "corrupt.png" not in errors:
        problems.append("corrupt.png: no error record")
    if max_cer is not None and (report.get("cer") is None or report["cer"] > max_cer):
        problems.append(f"CER {report.get('cer')} on the demo documents, more than {max_cer}: the model does not read them")
    if max_cer is not None:
        problems += [f"{doc}: CER {cer} against its transcript, more than {max_cer}"
                     for doc, cer in (report.get("cer_documents") or {}).items() if cer > max_cer]
    if problems:
        raise RuntimeError("demo check failed: " + "; ".join(problems))
    # The files of the current version (the results are republishable: see inkbooth.artifacts).
    files = artifacts.file_uri(results_uri, "report.json").rsplit("/", 1)[0]
    return {"results": results_uri, "files": files, "line_records": sum(by_doc.values()), "documents": len(by_doc),
            "error_records": errors, "report": report}


def print_summary(summary: dict[str, Any]) -> None:
    report = summary["report"]
    print("OCR pipeline finished in", summary["seconds"], "s")
    print(f"  results         {summary['results']}  (artifact; its files: {summary['files']}/)")
    print(f"  line records    {summary['files']}/results.jsonl  ({summary['line_records']} line records, "
          f"{len(summary['error_records'])} error record)")
    print(f"  text per doc    {summary['files']}/text/")
    print(f"  report          {summary['files']}/report.json  (lines/s {report.get('lines_per_second')}, "
          f"CER {report.get('cer')} against the transcripts, at most {MAX_CER})")
    if summary.get("families"):
        print(f"  font families   read by the {summary.get('reader', READER)} reader: " + "; ".join(
            f"{doc} {family} CER {cer}" for doc, (family, cer) in summary["families"].items()))
    if summary.get("sample"):
        print("  read            letter.png, the first lines as read | as printed:")
        width = max(len(read) for read, _ in summary["sample"])
        for read, truth in summary["sample"]:
            print(f"                    {read:<{width}} | {truth}")
    export = summary.get("export", {})
    if "int8_cer" in export:
        from inkbooth.ocr.recognition.export import ExportConfig

        print(f"  export parity   {export.get('parity_images')} rendered lines: CER fp32 {export['fp32_cer']}, INT8 "
              f"{export['int8_cer']} (delta {export['int8_cer_delta']:+}); INT8 text vs fp32 text CER "
              f"{export['int8_cer_vs_fp32']:.4f} (gate <= {ExportConfig().max_int8_cer}); INT8 {export['int8_bytes'] / 1e6:.1f} MB of "
              f"{export['fp32_bytes'] / 1e6:.1f}")
    for err in summary["error_records"].values():
        print(f"  error record    {err}")
    print(f"  visual report   {summary['reports']['html']}  (and report.md; `inkbooth report {summary['results']}`)")
