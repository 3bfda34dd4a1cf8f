"""export_trocr: a VisionEncoderDecoder checkpoint to ONNX (fp32, INT8, FP16), with parity checks.

Layout of the result::

    fp32/  encoder_model.onnx  decoder_init_model.onnx  decoder_step_model.onnx
    int8/  the same three, dynamically quantised (ORTQuantizer preset avx2 or avx512_vnni; weight
           products only, see ``int8_attention``)
    fp16/  the same three in half precision (for CUDA)
    parity.json, manifest.json

Each variant folder also holds config, generation config, tokenizer and image processor, so it
loads on its own. optimum exports the encoder; the decoder is exported as the two graphs of
``inkbooth.ocr.recognition.decoding`` (cross-attention projection once per line; one step for all beams,
returning log-probabilities and the cross-attention that token boxes are made from). A model that
engine cannot decode (not a TrOCR decoder, or a generation config asking for penalties or forced
tokens) is exported the earlier way instead: optimum's decoder and decoder-with-past, plus
``decoder_attn_model.onnx`` (logits and cross-attention of a teacher-forced pass), run through
``transformers.generate``.

Parity is measured on line images (given, or rendered by ``inkbooth.ocr.documents.synthetic``: in
the fonts, alphabet and words the model was trained on where its folder records them, as an
inkbooth reader's or fine-tuning output's ``training.json`` does; else document-like Latin text in
Pillow's font, or what the config's ``parity_*`` options name; always the same lines): token exact match
of ORT fp32 against PyTorch for greedy and beam search, exact match and CER of INT8 against ORT fp32,
and file sizes. Below the configured thresholds nothing is published and the error names the check.
Where the lines' true texts are known (rendered lines, or a label file beside the images), each
variant's own CER is reported too, and ``int8_cer_delta`` (INT8 CER minus fp32 CER) says what
quantisation costs in reading; it informs, the gate stays on INT8 against fp32.

After the gate, ``variants.measure_variants`` times each CPU variant reading the parity lines as the recognizer
reads by default (beam search and all) on the machine the export runs on, takes each one's CER, and
records in the manifest (``metrics["variants"]``) which one ``variant: auto`` runs there: the
fastest within the CER budget whose speed-up over fp32 is real, else fp32; with why, the CPU's
vector features and ONNX Runtime's version, since the choice holds on a like machine.

``reading_export`` gives ONNX Runtime an export of any checkpoint it is handed: the checkpoint's
export through the default gate, made once into the local cache and reused.

May import ``inkbooth.ocr.documents`` (parity lines) and the other recognition modules.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from inkbooth import artifacts, models, runtime, storage
from inkbooth.config import option, to_dict
from inkbooth.ocr.documents import labels
from inkbooth.ocr.documents.synthetic import DEFAULT_FONT, LineStyle, line_images, style_of
from inkbooth.ocr.recognition import graphs, onnxfiles, variants
from inkbooth.ocr.recognition.decoding import load_ort_decoder
from inkbooth.ocr.recognition.exported import (
    DECODER,
    DECODER_ATTN,
    DECODER_PAST,
    KIND,
    onnx_bytes,
)
from inkbooth.ocr.recognition.text import cer, corpus_cer
from inkbooth.storage.localfiles import sweep_temp_dirs

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """An exported model does not reproduce the source model closely enough to be published."""


@dataclasses.dataclass
class ExportConfig:
    """How a TrOCR checkpoint is exported, quantised and checked."""

    opset: int = option(17, "ONNX opset")
    variants: list[str] = option(["fp32", "int8", "fp16"], "variants to produce: fp32 (always), int8, fp16")
    int8_preset: Literal["avx2", "avx512_vnni"] = option("avx512_vnni", "ORTQuantizer preset for INT8")
    int8_per_channel: bool = option(False, "per-channel INT8 weights (larger, sometimes more accurate)")
    decoder: Literal["engine", "generate"] = option("engine", "engine: inkbooth.ocr.recognition.decoding's graphs (default); "
                                                    "generate: optimum's decoders run by transformers.generate")
    int8_attention: bool = option(False, "also quantise attention's activation x activation products (slower on "
                                         "CPU: every step re-quantises the cached keys and values; less accurate)")
    parity_images: int = option(64, "line images in the parity set (rendered when none are given)")
    parity_num_beams: int = option(4, "beams for the beam-search parity check")
    parity_max_new_tokens: int = option(48, "token limit during parity decoding")
    min_fp32_exact: float = option(0.98, "least share of lines where ORT fp32 tokens equal PyTorch's "
                                         "(greedy and beam search each)")
    max_int8_cer: float = option(0.05, "largest CER of INT8 text against fp32 text")
    max_fp16_cer: float = option(0.02, "largest CER of FP16 text against fp32 text (checked on CUDA only)")
    allow_pickle: bool = option(False, "accept pickle-based source weights (.bin); only for trusted models")
    parity_fonts: list[str] = option([], "fonts of rendered parity lines: font files, names in fonts_dir, or "
                                         "'default' ([]: the model's training fonts where its folder records "
                                         "them, else Pillow's font)")
    parity_alphabet: str = option("", "characters of rendered parity lines ('': the model's training alphabet "
                                      "where its folder records one, else document-like Latin text)")
    parity_word_list: str = option("", "word list of rendered parity lines (a path or a name in fonts_dir; "
                                       "'': the model's training word list, if any)")
    fonts_dir: str = option(".inkbooth/fonts", "where names of fonts and word lists are found (make fonts "
                                                "fills it)")
    threads: int = option(0, "intra-op threads for ONNX Runtime and torch (0: library default)")
    variant_rounds: int = option(3, "after the gate, interleaved rounds that time each CPU variant reading the "
                                    "parity lines, to record the one `variant: auto` runs (0: none; auto then "
                                    "keeps its default rule)")
    variant_num_beams: int = option(0, "beams while timing the variants (0: the recognizer's default)")
    variant_cer_margin: float = option(0.002, "CER a variant may add to fp32's (on the parity lines' true text, "
                                              "else against fp32's text) and still be chosen")
    variant_min_speedup: float = option(1.1, "least speed-up over fp32 (CPU time per line) for which a variant "
                                             "within the CER margin is chosen instead of fp32")

    def validate(self) -> None:
        bad = sorted(set(self.variants) - {"fp32", "int8", "fp16"})
        if bad:
            raise ValueError(f"variants: unknown {bad}; choose from fp32, int8, fp16")
        if "fp32" not in self.variants:
            self.variants = ["fp32", *self.variants]
        if self.variant_rounds < 0 or self.variant_num_beams < 0:
            raise ValueError("variant_rounds and variant_num_beams must be 0 or more")
        if self.variant_min_speedup < 1.0:
            raise ValueError("variant_min_speedup must be at least 1 (a variant slower than fp32 is never chosen)")
        for name in ("min_fp32_exact", "max_int8_cer", "max_fp16_cer", "variant_cer_margin"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


PARITY_SEED = 1234
RECORD = "training.json"  # what a fine-tuning output (and so an inkbooth reader) was trained on
RECIPE = "recipe.yaml"  # an inkbooth reader's recipe (inkbooth.readers): its stages' synthetic lines


def trained_lines(source_dir: Path) -> dict[str, Any] | None:
    """The synthetic-line config (``SynthConfig`` fields) a model folder records it was trained on:
    ``training.json``'s, else the last stage's of an inkbooth reader's ``recipe.yaml``; None without."""
    record = source_dir / RECORD
    if record.is_file():
        try:
            spec = (json.loads(record.read_text(encoding="utf-8")).get("config") or {}).get("synthetic")
        except (ValueError, AttributeError):
            spec = None
        if isinstance(spec, dict):
            return spec
    if (source_dir / RECIPE).is_file():
        from inkbooth.config import yaml_load

        stages = (yaml_load((source_dir / RECIPE).read_text(encoding="utf-8"), str(source_dir / RECIPE))
                  or {}).get("finetune") or []
        merged: dict[str, Any] = {}
        for stage in stages if isinstance(stages, list) else [stages]:  # each stage: its changes to the last
            if isinstance(stage, dict) and isinstance(stage.get("synthetic"), dict):
                merged.update(stage["synthetic"])
        return merged or None
    return None


def parity_style(source_dir: Path, config: ExportConfig, model: str = "") -> LineStyle | None:
    """How rendered parity lines look for this model: like its training lines (``trained_lines``),
    with the config's ``parity_*`` options over them; None for the default (Latin, Pillow's font).

    A font that is neither where the record says nor in ``fonts_dir`` falls back to Pillow's font
    only where that font has the whole alphabet; otherwise the export stops here and says why.
    """
    spec = dict(trained_lines(source_dir) or {})
    for key, value in (("fonts", config.parity_fonts), ("alphabet", config.parity_alphabet),
                       ("word_list", config.parity_word_list)):
        if value:
            spec[key] = value
    if not spec:
        return None
    spec.setdefault("fonts", [DEFAULT_FONT])
    # Whole lines within the token limit (a character tokenizer's, as the readers have), so that a
    # reading is never cut short: CER then measures reading, not the limit.
    spec["max_chars"] = max(1, min(int(spec.get("max_chars") or 64), config.parity_max_new_tokens - 2))
    try:
        return style_of(spec, config.fonts_dir)
    except ValueError as e:
        raise ValueError(f"{model or source_dir}: cannot draw the parity lines in the model's script and fonts: "
                         f"{e}. Run `make fonts` (scripts/fetch-fonts.sh fills .inkbooth/fonts), "
                         "set fonts_dir to where the fonts are, or give parity images (--parity-images-uri)") from None


def _parity_set(images_uri: str | None, n: int,
                style: LineStyle | None = None) -> tuple[list[Any], list[str] | None]:
    """Line images for the parity checks, and their true texts where known.

    Rendered lines (in ``style``, see ``parity_style``; seeded: the same lines every time) know their
    texts; a prefix of images knows them when it holds a label file (labels.jsonl or labels.tsv, as
    fine-tuning data and prepared line sets do).
    """
    if images_uri is None:
        pairs = style.lines(n, PARITY_SEED) if style else line_images(n, seed=PARITY_SEED)
        return [img for img, _ in pairs], [text for _, text in pairs]
    keys = [k for k in storage.list_files(images_uri) if k.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff"))]
    if not keys:
        raise ValueError(f"{images_uri}: no line images (.png/.jpg/.tif) for the parity check")
    truth: dict[str, str] = {}
    try:
        truth = {e.image: e.text for e in labels.read_labels(images_uri)[1]}
    except ValueError:
        pass  # images without labels: parity is measured between variants only
    chosen = [k for k in keys if k in truth][:n] if truth else keys[:n]
    images = [labels.decode(storage.read_bytes(storage.join(images_uri, k))) for k in chosen]
    return images, [truth[k] for k in chosen] if truth else None


def _same_tokens(a: Any, b: Any, pad: int) -> list[bool]:
    """Per row: equal token sequences once trailing padding is ignored."""
    out = []
    for x, y in zip(a.tolist(), b.tolist()):
        while x and x[-1] == pad:
            x.pop()
        while y and y[-1] == pad:
            y.pop()
        out.append(x == y)
    return out


def measure_parity(source_dir: Path, out: Path, variants: list[str], images: list[Any],
                   config: ExportConfig, texts: list[str] | None = None) -> dict[str, Any]:
    """Token exact-match and CER numbers between PyTorch, ORT fp32 and the quantised variants.

    With the images' true ``texts``, each variant's own CER is measured too (``fp32_cer``,
    ``int8_cer``) and ``int8_cer_delta`` says what quantisation costs in reading.
    """
    import torch
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    processor = TrOCRProcessor.from_pretrained(source_dir)
    model = VisionEncoderDecoderModel.from_pretrained(source_dir, attn_implementation="eager").eval()
    pad = processor.tokenizer.pad_token_id
    pixel_values = processor(images=images, return_tensors="pt").pixel_values
    gen = {"max_new_tokens": config.parity_max_new_tokens}
    batches = [pixel_values[i:i + 16] for i in range(0, len(pixel_values), 16)]

    def run(m: Any, beams: int) -> Any:
        seqs = []
        with torch.no_grad():
            for pv in batches:
                # As recognition decodes (the engine and the torch backend both stop a beam search
                # early), so parity compares like with like whatever the generation config says.
                s = m.generate(pixel_values=pv, num_beams=beams, early_stopping=beams > 1, **gen)
                seqs.append(s)
        width = max(s.shape[1] for s in seqs)
        return torch.cat([torch.nn.functional.pad(s, (0, width - s.shape[1]), value=pad) for s in seqs])

    metrics: dict[str, Any] = {"parity_images": len(images), "num_beams": config.parity_num_beams}
    torch_greedy, torch_beam = run(model, 1), run(model, config.parity_num_beams)
    fp32 = load_ort_decoder(out / "fp32", provider="CPUExecutionProvider", threads=config.threads)
    ort_greedy, ort_beam = run(fp32, 1), run(fp32, config.parity_num_beams)
    metrics["fp32_greedy_exact"] = sum(_same_tokens(torch_greedy, ort_greedy, pad)) / len(images)
    metrics["fp32_beam_exact"] = sum(_same_tokens(torch_beam, ort_beam, pad)) / len(images)
    ref_text = processor.batch_decode(ort_greedy, skip_special_tokens=True)
    if texts is not None:
        metrics["fp32_cer"] = round(corpus_cer(ref_text, texts), 5)
    for variant in variants:
        if variant == "fp32":
            continue
        provider = "CPUExecutionProvider"
        if variant == "fp16":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                metrics["fp16_parity"] = "not measured: CUDAExecutionProvider unavailable"
                continue
            provider = "CUDAExecutionProvider"
        m = load_ort_decoder(out / variant, provider=provider, threads=config.threads)
        greedy = run(m, 1)
        text = processor.batch_decode(greedy, skip_special_tokens=True)
        metrics[f"{variant}_greedy_exact"] = sum(_same_tokens(ort_greedy, greedy, pad)) / len(images)
        total_ref = sum(len(r) for r in ref_text) or 1
        metrics[f"{variant}_cer_vs_fp32"] = sum(cer(h, r) * len(r) for h, r in zip(text, ref_text)) / total_ref
        if texts is not None:
            metrics[f"{variant}_cer"] = round(corpus_cer(text, texts), 5)
            metrics[f"{variant}_cer_delta"] = round(metrics[f"{variant}_cer"] - metrics["fp32_cer"], 5)
    return metrics


def check_parity(metrics: dict[str, Any], config: ExportConfig) -> list[str]:
    """The failed checks, each a sentence; empty when the export may be published."""
    failed = []
    for key in ("fp32_greedy_exact", "fp32_beam_exact"):
        if metrics[key] < config.min_fp32_exact:
            failed.append(f"{key} = {metrics[key]:.3f} is below min_fp32_exact = {config.min_fp32_exact}")
    if "int8_cer_vs_fp32" in metrics and metrics["int8_cer_vs_fp32"] > config.max_int8_cer:
        failed.append(f"int8_cer_vs_fp32 = {metrics['int8_cer_vs_fp32']:.4f} exceeds max_int8_cer = {config.max_int8_cer}")
    if "fp16_cer_vs_fp32" in metrics and metrics["fp16_cer_vs_fp32"] > config.max_fp16_cer:
        failed.append(f"fp16_cer_vs_fp32 = {metrics['fp16_cer_vs_fp32']:.4f} exceeds max_fp16_cer = {config.max_fp16_cer}")
    return failed


def export_trocr(model: str, output: str, config: ExportConfig | None = None,
                 parity_images: str | None = None) -> artifacts.Manifest:
    """Export the TrOCR checkpoint at ``model`` (hub id, folder, s3://) to an ONNX artifact at ``output``.

    ``output`` is a local folder or an ``s3://`` prefix; the artifact appears there only if every
    parity check passes. A rerun for the same source and config finds the published artifact and
    returns its manifest without redoing the work.
    """
    import torch
    from transformers import VisionEncoderDecoderModel

    sweep_temp_dirs()  # what killed exports left in the temp folder (this one makes inkbooth-export-…)
    config = config or ExportConfig()
    config.validate()
    runtime.limit_torch_threads(config.threads)  # the pod's CPU quota, OMP_THREAD_LIMIT
    source_dir = models.resolve(model, allow_pickle=config.allow_pickle)
    source_hash = models.folder_hash(source_dir)
    if artifacts.is_published(output):
        existing = artifacts.read_manifest(output)
        if existing.inputs.get("model") == source_hash and existing.config == to_dict(config):
            log.info("%s: already exported from this model and config; reusing it", output)
            return existing

    # The parity lines first: a model whose fonts are missing stops before the export's minutes.
    style = None if parity_images else parity_style(source_dir, config, model)
    parity_lines = f"images under {parity_images}" if parity_images else (
        style.about if style else "document-like Latin lines in Pillow's default font")
    log.info("%s: parity lines: %s", model, parity_lines)
    started = time.perf_counter()
    # Tracing warns about every shape check in the modelling code; the parity checks below are the real test.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    with storage.temp_dir("inkbooth-export-") as tmp:
        work = Path(tmp)
        fp32 = work / "fp32"
        onnxfiles.export_optimum(source_dir, fp32, config.opset)
        hf_model = VisionEncoderDecoderModel.from_pretrained(source_dir, attn_implementation="eager").eval()
        why_not = graphs.engine_supports(hf_model) or ", ".join(graphs.unsupported_generation(
            hf_model.generation_config))
        if config.decoder == "generate" or why_not:
            if why_not:
                log.info("%s: decoded by transformers.generate (the engine does not support: %s)", model, why_not)
            onnxfiles.export_attention_decoder(hf_model, fp32 / DECODER_ATTN, config.opset)
        else:
            graphs.export_engine(hf_model, fp32, config.opset)
            for name in (DECODER, DECODER_PAST):  # optimum's decoders: the engine's graphs replace them
                (fp32 / name).unlink(missing_ok=True)
        if "int8" in config.variants:
            onnxfiles.quantize_int8(fp32, work / "int8", config.int8_preset, config.int8_per_channel, config.int8_attention)
        if "fp16" in config.variants:
            onnxfiles.convert_fp16(fp32, work / "fp16")
        export_seconds = time.perf_counter() - started

        images, texts = _parity_set(parity_images, config.parity_images, style)
        metrics = measure_parity(source_dir, work, config.variants, images, config, texts)
        metrics["export_seconds"] = round(export_seconds, 2)
        for variant in config.variants:
            metrics[f"{variant}_bytes"] = onnx_bytes(work / variant)
        if "int8" in config.variants:
            metrics["int8_size_ratio"] = metrics["int8_bytes"] / metrics["fp32_bytes"]
        failed = check_parity(metrics, config)
        if not failed and config.variant_rounds:
            metrics["variants"] = variants.measure_variants(work, config.variants, images, texts, config)
            log.info("%s: variant auto will run %s", model, metrics["variants"]["why"])
        (work / "parity.json").write_text(json.dumps({"metrics": metrics, "failed": failed,
                                                      "parity_lines": parity_lines}, indent=2, ensure_ascii=False))
        if failed:
            raise ParityError(f"{model}: export not published; parity check failed: " + "; ".join(failed))
        # A new version of the output: files of an earlier export there are never part of it.
        return artifacts.publish(work, output, kind=KIND, inputs={"model": source_hash},
                                 config=to_dict(config), metrics=metrics,
                                 lineage={"source": model, "variants": config.variants,
                                          "parity_lines": parity_lines}, overwrite=True)


def reading_export(model: str, *, threads: int = 0) -> str:
    """The trocr-onnx export that ONNX Runtime reads ``model`` with: ``model`` itself when it is one;
    else (a PyTorch checkpoint: folder, hub id, s3://) its export through the default parity gate,
    made once into the local cache, ``<cache>/onnx/<the model's fingerprint>``, and reused after.

    A model that fails the gate raises ``ParityError`` with the gate's message. One process at a time
    exports a model into a node's cache; the others wait for it and take its export.
    """
    import fcntl

    if artifacts.is_published(model) and artifacts.read_manifest(model).kind == KIND:
        return model
    key = models.fingerprint(model)  # the content (a folder's hash, an artifact's, a hub commit)
    root = storage.local_cache_dir() / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    dest = root / re.sub(r"[^A-Za-z0-9._-]+", "-", key)
    config = ExportConfig(threads=threads)
    wanted = {k: v for k, v in to_dict(config).items() if k != "threads"}

    def cached() -> bool:
        if not artifacts.is_published(str(dest)):
            return False
        m = artifacts.read_manifest(str(dest))
        return m.kind == KIND and {k: v for k, v in m.config.items() if k != "threads"} == wanted

    if cached():
        log.info("%s: not an ONNX export; reading its export cached at %s", model, dest)
        return str(dest)
    fd = os.open(root / f".{dest.name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed, or when this process dies
        if not cached():
            log.info("%s: not an ONNX export; exporting it through the default parity gate to %s "
                     "(once: later runs reuse it)", model, dest)
            export_trocr(model, str(dest), config)
    finally:
        os.close(fd)
    return str(dest)
