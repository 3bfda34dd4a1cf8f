"""Batch OCR: documents to line records (text, confidence, token and word boxes).

One code path for both backends. Per batch of line crops: the encoder runs once; ``generate``
(greedy or beam search) reuses its output; then one teacher-forced decoder pass over the chosen
tokens returns their log-probabilities (the line confidence is their mean) and the cross-attention
that token boxes come from. With ONNX Runtime that pass is ``decoder_attn_model.onnx``; with PyTorch
it is the very module that file was exported from.

Per document, the result is written as one object under ``<output>/work/`` (atomic; JSON Lines: a
header, then the records), so a rerun skips documents already done (same bytes, same model, same
config) and an interrupted shard loses at most the document it was reading. A document is read a
page at a time and its records are written as they are made, so memory stays flat however many
pages it has. A document that cannot be read becomes an error record; a failure of the run itself
(config, model, store) stops the run instead of turning every document into an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from inkbooth import artifacts, shards, storage
from inkbooth.config import config_hash, option, to_dict
from inkbooth.ocr import localize, pages

log = logging.getLogger(__name__)

WORK = "work"
# JSON Lines: a header, then the records (streamed; the older one-object ".json" results are redone).
DOC_SUFFIX = ".jsonl"
OWNER = "owner.json"


class OutputError(ValueError):
    """An output that this run may not write to (another run's, or inside the input)."""


@dataclasses.dataclass
class RecognizeConfig:
    """How lines are read."""

    backend: Literal["onnx", "torch"] = option("onnx", "onnx (ONNX Runtime, default) or torch")
    variant: Literal["auto", "fp32", "int8", "fp16"] = option(
        "auto", "which exported variant ONNX Runtime runs; auto: the fastest where it runs (fp16 on CUDA, "
                "INT8 on CPU, fp32 when the export lacks it; see bench/ocr.py)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available (auto), or force one")
    num_beams: int = option(4, "beam search width (1 = greedy)", min=1, max=64)
    max_new_tokens: int = option(128, "longest line in tokens (the library default of 20 truncates lines)",
                                 min=1, max=4096)
    batch_size: int = option(8, "line crops per forward pass", min=1, max=4096)
    threads: int = option(0, "intra-op threads (0: as many as the CPU quota allows, see inkbooth.runtime)",
                          min=0, max=1024)
    token_boxes: bool = option(True, "token and word boxes from cross-attention")
    box_threshold: float = option(0.5, "attention share of the peak that still belongs to a token's box",
                                  min=0.0, max=1.0)
    pages: pages.PagesConfig = option(None, "how pages are read and cut into lines")
    skip_done: bool = option(True, "skip documents whose result already exists for the same input, model and config")

    def __post_init__(self) -> None:
        if self.pages is None:
            self.pages = pages.PagesConfig()
        elif isinstance(self.pages, dict):  # built in Python with a plain mapping: same checks as a file
            from inkbooth.config import from_dict

            self.pages = from_dict(pages.PagesConfig, self.pages, source="pages")

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "recognize")  # the pages config too
        self.pages.validate()
        if self.backend == "torch" and self.variant != "fp32":
            self.variant = "fp32"


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def make_attention_decoder(model: Any) -> Any:
    """A module: (decoder input ids, encoder states) -> (logits, cross-attention mean over layers, heads)."""
    import torch

    from inkbooth.ocr import decoding

    class DecoderWithCrossAttention(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.decoder = m.decoder
            # VisionEncoderDecoderModel projects encoder states when the hidden sizes differ.
            self.proj = decoding.encoder_projection(m)

        def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor):
            if self.proj is not None:
                encoder_hidden_states = self.proj(encoder_hidden_states)
            out = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                               output_attentions=True, use_cache=False, return_dict=True)
            cross = torch.stack(out.cross_attentions, dim=1)  # batch, layer, head, target, source
            return out.logits, cross.mean(dim=(1, 2))

    return DecoderWithCrossAttention(model).eval()


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available):
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError("device=cuda, but ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _ort_device(device: str) -> str:
    """Where ONNX Runtime runs for the configured ``device``: "cuda" or "cpu"."""
    return "cuda" if _providers(device)[0].startswith("CUDA") else "cpu"


def _session_options(threads: int) -> Any:
    """ONNX Runtime options: ``threads`` intra-op threads, or as many as the CPU quota allows (0).

    ORT's own default is one thread per core of the node, which in a pod exceeds its CPU limit.
    """
    import onnxruntime as ort

    from inkbooth import runtime

    so = ort.SessionOptions()
    so.intra_op_num_threads = runtime.threads(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def load_ort_model(folder: Path, provider: str = "CPUExecutionProvider", threads: int = 0) -> Any:
    """optimum's ORTModelForVision2Seq over encoder, decoder and decoder-with-past of ``folder``."""
    from optimum.onnxruntime import ORTModelForVision2Seq

    from inkbooth.ocr.export import DECODER, DECODER_PAST, ENCODER

    return ORTModelForVision2Seq.from_pretrained(
        folder, provider=provider, session_options=_session_options(threads), use_cache=True, use_merged=False,
        encoder_file_name=ENCODER, decoder_file_name=DECODER, decoder_with_past_file_name=DECODER_PAST,
    )


def choose_variant(requested: str, available: set[str], device: str) -> str:
    """The export variant to run: ``requested``, or for "auto" the fastest one present for ``device``.

    On CPU the INT8 engine was the fastest in bench/ocr.py (AVX2, no VNNI; VNNI widens the lead);
    on CUDA fp16 (INT8's dynamic quantisation ops run on the CPU there).
    """
    if requested != "auto":
        if requested not in available:
            raise ValueError(f"variant {requested!r} is not in this export (it has {sorted(available)})")
        return requested
    for name in (("fp16", "fp32") if device == "cuda" else ("int8", "fp32")):
        if name in available:
            return name
    raise ValueError(f"no usable variant in this export (it has {sorted(available)})")


def load_ort_decoder(folder: Path, provider: str = "CPUExecutionProvider", threads: int = 0) -> Any:
    """What decodes an export variant folder: the engine of ``inkbooth.ocr.decoding`` when the folder
    carries its graphs, else optimum's model (earlier exports); both have ``generate``."""
    from inkbooth.ocr import decoding

    if decoding.has_engine(folder):
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        return decoding.OrtEngine(folder, providers, _session_options(threads))
    return load_ort_model(folder, provider=provider, threads=threads)


@dataclasses.dataclass
class LineResult:
    text: str
    confidence: float  # mean log-probability of the tokens (EOS included)
    tokens: list[str]
    token_logprobs: list[float]
    attention: Any  # tokens x encoder positions (numpy), or None


class Recognizer:
    """Reads batches of line images with the ONNX or PyTorch backend."""

    def __init__(self, model_dir: str | Path, config: RecognizeConfig | None = None) -> None:
        import torch
        from transformers import GenerationConfig, TrOCRProcessor

        from inkbooth import runtime

        self.config = config or RecognizeConfig()
        self.engine: Any = None
        self.dir = Path(model_dir)
        runtime.limit_torch_threads(self.config.threads)
        if (self.dir / artifacts.MANIFEST).is_file():  # an export published here: its current version's files
            self.dir = Path(artifacts.read_manifest(str(self.dir)).location(str(self.dir)))
        if self.config.backend == "onnx" and self.config.variant == "auto":
            present = {v for v in ("fp32", "int8", "fp16") if (self.dir / v).is_dir()}
            self.config = dataclasses.replace(self.config, variant=choose_variant("auto", present,
                                                                                  _ort_device(self.config.device)))
        root = self.dir / self.config.variant if (self.dir / self.config.variant).is_dir() else self.dir
        self.root = root
        self.processor = TrOCRProcessor.from_pretrained(root)
        self.tokenizer = self.processor.tokenizer
        gen = GenerationConfig.from_pretrained(root)
        self.pad_id = gen.pad_token_id if gen.pad_token_id is not None else self.tokenizer.pad_token_id
        self.eos_id = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        if self.config.backend == "torch":
            from transformers import VisionEncoderDecoderModel

            self.model = VisionEncoderDecoderModel.from_pretrained(root, attn_implementation="eager").eval()
            self.device = "cuda" if self.config.device != "cpu" and torch.cuda.is_available() else "cpu"
            if self.config.device == "cuda" and self.device != "cuda":
                raise RuntimeError("device=cuda, but torch sees no CUDA device")
            self.model.to(self.device)
            self.attn_decoder = make_attention_decoder(self.model)
            enc_cfg = self.model.config.encoder
        else:
            import onnxruntime as ort
            from transformers import AutoConfig

            from inkbooth.ocr import decoding
            from inkbooth.ocr.export import DECODER_ATTN

            providers = _providers(self.config.device)
            self.device = _ort_device(self.config.device)
            if decoding.has_engine(root):
                self.engine = decoding.OrtEngine(root, providers, _session_options(self.config.threads))
            else:  # an export from before the engine: optimum's decoders under generate
                self.model = load_ort_model(root, provider=providers[0], threads=self.config.threads)
                self.attn_session = ort.InferenceSession(str(root / DECODER_ATTN),
                                                         _session_options(self.config.threads), providers=providers)
            enc_cfg = AutoConfig.from_pretrained(root).encoder
        self.grid = localize.patch_grid(enc_cfg)
        self.max_new_tokens = self._token_limit()
        # trocr-base-printed (and models trained like it) emit <s> right after the start token: not text.
        self.bos_id = self.tokenizer.bos_token_id

    def content_box(self, crop_size: tuple[int, int]) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """Where a crop of this size lands in the encoder input (see ``localize.content_box``)."""
        return localize.content_box(self.processor.image_processor, crop_size)

    def _token_limit(self) -> int:
        from transformers import AutoConfig

        positions = AutoConfig.from_pretrained(self.root).decoder.max_position_embeddings
        # Learned positions cap the sequence; the start token takes one of them.
        return max(1, min(self.config.max_new_tokens, positions - 2))

    def read(self, images: list[Any], *, min_new_tokens: int = 0) -> list[LineResult]:
        """Text, confidence, tokens and attention for each line image.

        ``min_new_tokens`` forces that many decoding steps (benchmarks compare equal work with it).
        """
        import numpy as np
        import torch

        if not images:
            return []
        pixel_values = self.processor(images=images, return_tensors="pt").pixel_values
        min_new_tokens = min(min_new_tokens, self.max_new_tokens)
        if self.engine is not None:
            decoded = self.engine.decode(pixel_values.numpy(), num_beams=self.config.num_beams,
                                         max_new_tokens=self.max_new_tokens, min_new_tokens=min_new_tokens)
            return self._results(decoded.sequences, decoded.token_logprobs, decoded.attention)
        gen_kwargs = {"num_beams": self.config.num_beams, "max_new_tokens": self.max_new_tokens,
                      "early_stopping": self.config.num_beams > 1}
        if min_new_tokens:
            gen_kwargs["min_new_tokens"] = min_new_tokens
        with torch.inference_mode():
            if self.config.backend == "torch":
                pixel_values = pixel_values.to(self.device)
                encoder_outputs = self.model.encoder(pixel_values=pixel_values)
                # Taken before generate: with beams it replaces last_hidden_state by a copy per beam.
                states = encoder_outputs.last_hidden_state
                sequences = self.model.generate(pixel_values=pixel_values, encoder_outputs=encoder_outputs, **gen_kwargs)
                logits, cross = self.attn_decoder(sequences[:, :-1], states)
                logits, cross, sequences = logits.float().cpu().numpy(), cross.float().cpu().numpy(), sequences.cpu()
            else:
                encoder_outputs = self.model.encoder(pixel_values=pixel_values)
                states = encoder_outputs.last_hidden_state
                sequences = self.model.generate(pixel_values=pixel_values, encoder_outputs=encoder_outputs, **gen_kwargs)
                logits, cross = self.attn_session.run(None, {
                    "input_ids": sequences[:, :-1].cpu().numpy().astype(np.int64),
                    "encoder_hidden_states": states.float().cpu().numpy(),
                })
        seqs = sequences.numpy()
        logits = logits.astype(np.float64)
        logprobs = logits - logits.max(-1, keepdims=True)
        logprobs -= np.log(np.exp(logprobs).sum(-1, keepdims=True))
        token_logprobs = np.take_along_axis(logprobs, seqs[:, 1:, None], axis=-1)[..., 0]
        return self._results(seqs, token_logprobs, cross)

    def _results(self, seqs: Any, token_logprobs: Any, attention: Any) -> list[LineResult]:
        """Line results from sequences (start token first), their token log-probabilities and attention."""
        import numpy as np

        results = []
        for b in range(len(seqs)):
            targets = seqs[b, 1:]
            n = len(targets)
            eos = np.flatnonzero(targets == self.eos_id)
            if len(eos):
                n = int(eos[0]) + 1
            else:
                pads = np.flatnonzero(targets == self.pad_id)
                n = int(pads[0]) if len(pads) else n
            ids = targets[:n]
            lp = token_logprobs[b, :n].astype(np.float64)
            visible = [i for i, t in enumerate(ids) if t != self.eos_id and not (i == 0 and t == self.bos_id)]
            tokens = self.tokenizer.convert_ids_to_tokens([int(ids[i]) for i in visible])
            text = self.tokenizer.decode([int(ids[i]) for i in visible], skip_special_tokens=True).strip()
            results.append(LineResult(
                text=text, confidence=float(lp.mean()) if n else float("-inf"), tokens=tokens,
                token_logprobs=[float(lp[i]) for i in visible],
                attention=attention[b, visible] if self.config.token_boxes else None,
            ))
        return results


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------


def line_records(doc: str, lines: list[pages.Line], results: list[LineResult], grid: tuple[int, int],
                 config: RecognizeConfig, content: Any = None, first: int = 1) -> list[dict[str, Any]]:
    """JSON-able records, one per line, boxes in page pixels; lines are numbered from ``first``.

    ``content`` maps a crop size to where the crop lands in the encoder input (``Recognizer.content_box``);
    without it the crop fills the input.
    """
    records = []
    for idx, (line, res) in enumerate(zip(lines, results), start=first):
        rec: dict[str, Any] = {
            "document": doc, "page": line.page + 1, "line": idx, "box": list(line.box), "text": res.text,
            "confidence": round(res.confidence, 5) if math.isfinite(res.confidence) else None,
        }
        if config.token_boxes and res.attention is not None and len(res.tokens):
            boxes = localize.token_boxes(res.attention, grid, line.image.size, line.to_page, config.box_threshold,
                                         content(line.image.size) if content else None)
            rec["tokens"] = [
                {"text": _decode_tokens(t), "box": list(b), "logprob": round(lp, 5)}
                for t, b, lp in zip(res.tokens, boxes, res.token_logprobs)
            ]
            words = []
            for group in localize.group_words(res.tokens):
                text = _decode_tokens("".join(res.tokens[i] for i in group)).strip()
                words.append({"text": text, "box": list(localize.union([boxes[i] for i in group])),
                              "logprob": round(sum(res.token_logprobs[i] for i in group) / len(group), 5)})
            rec["words"] = words
        records.append(rec)
    return records


_BYTE_DECODER: dict[str, int] | None = None


def _decode_tokens(text: str) -> str:
    """Byte-level BPE token characters back to UTF-8 text."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        from transformers.models.roberta.tokenization_roberta import bytes_to_unicode

        _BYTE_DECODER = {v: k for k, v in bytes_to_unicode().items()}
    raw = bytes(_BYTE_DECODER[c] for c in text if c in _BYTE_DECODER)
    return raw.decode("utf-8", errors="replace")


def resolve_model(model: str, config: RecognizeConfig) -> tuple[Path, str]:
    """The local folder and content hash of the model a backend reads.

    ONNX Runtime reads an export artifact (see ``inkbooth.ocr.export``); PyTorch reads the source
    checkpoint (hub id, folder or s3://).
    """
    if config.backend == "torch":
        from inkbooth import models

        folder = models.resolve(model)
        return folder, models.folder_hash(folder)
    if not artifacts.is_published(model):
        raise ValueError(f"{model}: not an exported model (no {artifacts.MANIFEST}); run export-trocr first, "
                         "or use backend=torch with a PyTorch checkpoint")
    manifest = artifacts.read_manifest(model)
    if manifest.kind != "trocr-onnx":
        raise ValueError(f"{model}: is a {manifest.kind!r} artifact, not a trocr-onnx export")
    # Only the variant this worker runs is fetched (an export holds three); "auto" is settled here,
    # so the settings a result is keyed by name the variant that made it. A variant the export lacks
    # fails the run here, before any document.
    present = {e.path.split("/", 1)[0] for e in manifest.files if "/" in e.path}
    try:
        config.variant = choose_variant(config.variant, present, _ort_device(config.device))
    except ValueError as e:
        raise ValueError(f"{model}: {e}; choose one of those, or export it (export config 'variants')") from None
    return artifacts.fetch(model, only=config.variant), manifest.content_hash


def scan_documents(documents: str) -> tuple[list[str], list[dict[str, str]]]:
    """(keys of the documents under a prefix, files and folders left out with the reason why).

    Left out: hidden files and folders (a name starting with "."), manifests, partial writes, and
    folders that are symbolic links (not followed). Nothing is left out silently: the reasons go in
    the run's report.
    """
    keys, skipped = [], []
    links: list[str] = []
    for rel in storage.list_files(documents, links=links):
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):
            skipped.append({"key": rel, "reason": "hidden (a name starting with '.')"})
        elif parts[-1] == artifacts.MANIFEST:
            skipped.append({"key": rel, "reason": f"an artifact's {artifacts.MANIFEST}, not a document"})
        else:
            keys.append(rel)
    skipped += [{"key": rel + "/", "reason": "a symbolic link to a folder (not followed)"} for rel in links]
    return keys, skipped


def list_documents(documents: str) -> list[str]:
    """Relative keys of the documents under a prefix (see ``scan_documents`` for what is left out)."""
    return scan_documents(documents)[0]


def result_uri(output: str, rel: str) -> str:
    """Where a document's result lives: named by a hash of its key, so no input name becomes a key."""
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return storage.join(output, WORK, digest + DOC_SUFFIX)


def claim_output(documents: str, output: str) -> None:
    """Bind ``output`` to the documents whose results it holds, or refuse a run over other documents.

    The first run writes ``<output>/owner.json`` (a no-overwrite write: concurrent shards of one
    run agree); a run over another documents prefix is refused rather than merged away. An output
    inside the documents folder would be read back as documents on the next run: refused too.
    """
    docs, out = str(storage.parse(documents)).rstrip("/"), str(storage.parse(output)).rstrip("/")
    if out == docs or out.startswith(docs + "/"):
        raise OutputError(f"{output}: the output is inside the documents folder {documents}; its results would be "
                          "read as documents by the next run. Choose an output outside it")
    owner = storage.join(output, OWNER)
    try:
        storage.write_text(owner, json.dumps({"documents": docs}) + "\n", if_absent=True)
        return
    except storage.AlreadyExistsError:
        pass
    try:
        held = json.loads(storage.read_text(owner)).get("documents")
    except (ValueError, AttributeError):
        held = None
    if held != docs:
        raise OutputError(f"{output}: holds the results of documents {held!r} (see {owner}); this run reads "
                          f"{docs!r}. Use another output, or delete that one first")


def _note(doc: str, status: str, message: str) -> dict[str, Any]:
    """A record about a document rather than one of its lines: ``error``, ``warning`` or ``empty``."""
    return {"document": doc, "page": None, "line": None, "status": status, status: message}


def error_result(doc: str, message: str, digest: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a document that could not be read: one error record."""
    header: dict[str, Any] = {"document": doc, "status": "error"}
    if digest:
        header["sha256"] = digest
    return header, [_note(doc, "error", message)]


def _previous_result(out_uri: str, model_hash: str, settings: str) -> dict[str, Any] | None:
    """The header of the finished result at ``out_uri`` if the same model and config made it (else None)."""
    try:
        head = storage.read_bytes(out_uri).split(b"\n", 1)[0]
        prev = json.loads(head)
    except (ValueError, storage.StorageError):  # absent, or unreadable: do the document again
        return None
    ok = isinstance(prev, dict) and prev.get("status") == "ok" and prev.get("model") == model_hash \
        and prev.get("config") == settings
    return prev if ok and prev.get("sha256") else None


def json_text(value: Any, indent: int | None = None) -> str:
    """JSON with UTF-8 text as itself; where a value names a file whose name is not UTF-8 (a lone
    surrogate), with escapes instead, so it can still be stored and read back."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, indent=indent)
    return text


def json_line(record: dict[str, Any]) -> str:
    """One JSON Lines line (see ``json_text``)."""
    return json_text(record) + "\n"


def write_result(out_uri: str, header: dict[str, Any], records: Path | list[dict[str, Any]]) -> None:
    """A document's result as one object: its header line, then one record per line (JSON Lines).

    ``records`` is a local file of JSON lines (streamed, never held in memory) or a short list.
    """
    if isinstance(records, list):
        text = "".join(json_line(r) for r in [header, *records])
        storage.write_text(out_uri, text)
        return
    whole = records.with_name(records.name + ".result")
    with open(whole, "w", encoding="utf-8") as out, open(records, encoding="utf-8") as body:
        out.write(json_line(header))
        shutil.copyfileobj(body, out)
    storage.upload(whole, out_uri)
    whole.unlink()


def read_result(out_uri: str, scratch: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]] | None:
    """(header, records) of a document's result, streamed from a local copy in ``scratch``; None if absent."""
    local = scratch / "result.jsonl"
    try:
        storage.download(out_uri, local)
    except storage.NotFoundError:
        return None
    f = open(local, encoding="utf-8")  # noqa: SIM115 - closed by the generator below
    try:
        header = json.loads(f.readline())
    except ValueError:
        f.close()
        raise storage.StorageError(f"{out_uri}: not a document result (unreadable header)") from None

    def records() -> Iterator[dict[str, Any]]:
        with f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    return header, records()


def document_result(output: str, rel: str) -> dict[str, Any] | None:
    """A document's result as one dict, its header with ``records`` (for tools and tests; a big
    document's records are better streamed with ``read_result``)."""
    with storage.temp_dir("inkbooth-result-") as tmp:
        found = read_result(result_uri(output, rel), Path(tmp))
        return None if found is None else {**found[0], "records": list(found[1])}


def _document_error(e: BaseException) -> bool:
    """Whether a failure to reach a document is the document's (gone, corrupt, unaddressable), not the run's."""
    return isinstance(e, (storage.NotFoundError, storage.ChecksumError, ValueError))


def recognize_documents(documents: str, model: str, output: str, config: RecognizeConfig | None = None, *,
                        shard: str = "0/1", keys: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """OCR every document of shard ``shard`` under ``documents``; per-document results go to ``output``.

    ``model`` is an ONNX export artifact (local folder or ``s3://``). ``keys`` (relative document
    keys) overrides listing ``documents``, so all shards of a run work from one snapshot.

    Errors of the run (config, model, store) raise before or between documents; only a document's
    own problems become its error record. A document is read a page at a time: its lines are
    recognised in batches and their records written to a local file as they come, so memory does
    not grow with the number of pages. Every document gets at least one record: its lines, an
    ``empty`` record when no text was found, a ``warning`` record for pages past ``max_pages``.
    A PDF password may come from the ``INKBOOTH_PDF_PASSWORD`` environment variable.
    """
    from tqdm import tqdm

    config = config or RecognizeConfig()
    config.validate()
    if config.pages.pdf_password is None and os.environ.get(pages.PASSWORD_ENV):
        config.pages.pdf_password = os.environ[pages.PASSWORD_ENV]
    claim_output(documents, output)
    model_dir, model_hash = resolve_model(model, config)
    settings = config_hash({k: v for k, v in to_dict(config).items() if k != "skip_done"})
    all_keys = sorted(keys) if keys is not None else list_documents(documents)
    mine = shards.select(all_keys, shard)
    recognizer: Recognizer | None = None
    # started/finished (epoch seconds) give the merge the run's wall-clock throughput across shards.
    summary = {"shard": shard, "documents": len(mine), "done": 0, "skipped": 0, "errors": 0, "lines": 0,
               "pages": 0, "seconds": 0.0, "started": time.time()}
    bar = tqdm(mine, desc=f"ocr shard {shard}", unit="doc", file=sys.stderr, disable=not progress)
    with storage.temp_dir("inkbooth-ocr-") as tmp:
        scratch = Path(tmp)
        local = scratch / "document"  # never named after the input: its name may be too long to be a file
        for rel in bar:
            started = time.perf_counter()
            out_uri = result_uri(output, rel)
            prev = _previous_result(out_uri, model_hash, settings) if config.skip_done else None
            try:
                doc_uri = storage.join(documents, rel)
                # Done already? The store's recorded checksum says so without a download, where it has one.
                if prev is not None and storage.stat(doc_uri).sha256 == prev["sha256"]:
                    summary["skipped"] += 1
                    continue
                storage.download(doc_uri, local)
            except Exception as e:
                if not _document_error(e):
                    raise
                write_result(out_uri, *error_result(rel, f"{rel!r}: {e}"))
                summary["errors"] += 1
                continue
            digest = storage.sha256_file(local)
            if prev is not None and prev["sha256"] == digest:
                summary["skipped"] += 1
                continue
            if recognizer is None:
                recognizer = Recognizer(model_dir, config)  # a model that cannot load fails the run
            try:
                header, records = _read_document(local, rel, recognizer, config, scratch)
                header.update({"sha256": digest, "model": model_hash, "config": settings,
                               "seconds": round(time.perf_counter() - started, 4)})
                summary["done"] += 1
                summary["lines"] += header["lines"]
                summary["pages"] += header["pages_with_text"]
            except pages.InputError as e:
                header, records = error_result(rel, str(e), digest)
                summary["errors"] += 1
                log.warning("%s", e)
            except Exception as e:  # noqa: BLE001 - one bad document must not stop the batch
                message = f"{rel}: {type(e).__name__}: {e}"
                header, records = error_result(rel, message, digest)
                summary["errors"] += 1
                log.exception("%s", message)
            write_result(out_uri, header, records)
            summary["seconds"] += time.perf_counter() - started
            bar.set_postfix(lines=summary["lines"], errors=summary["errors"])
            local.unlink(missing_ok=True)
    summary["seconds"] = round(summary["seconds"], 3)
    summary["finished"] = time.time()
    return summary


def _read_document(path: Path, rel: str, recognizer: Recognizer, config: RecognizeConfig,
                   scratch: Path) -> tuple[dict[str, Any], Path]:
    """Read one document page by page; its records go to a local JSON Lines file as they are made.

    Lines wait in a small buffer (a few batches, never a whole document) so that batches hold
    lines of similar width, which keeps beam lengths alike; record order is the reading order.
    """
    records_path = scratch / "records.jsonl"
    pending: list[pages.Line] = []
    counts = {"lines": 0, "pages": 0, "total": 0}
    with_text: set[int] = set()
    buffer = 4 * config.batch_size

    with open(records_path, "w", encoding="utf-8") as sink:
        def flush() -> None:
            results: list[LineResult | None] = [None] * len(pending)
            order = sorted(range(len(pending)), key=lambda i: pending[i].image.width)
            for start in range(0, len(order), config.batch_size):
                chunk = order[start:start + config.batch_size]
                for i, res in zip(chunk, recognizer.read([pending[i].image for i in chunk])):
                    results[i] = res
            for rec in line_records(rel, pending, results, recognizer.grid, config, recognizer.content_box,
                                    first=counts["lines"] + 1):
                sink.write(json_line(rec))
            counts["lines"] += len(pending)
            pending.clear()

        for page in pages.load_pages(path, rel, config.pages):
            counts["pages"] += 1
            counts["total"] = page.total
            lines = pages.page_lines(page, config.pages)
            del page  # its image goes now; the lines keep only their crops
            with_text.update(ln.page for ln in lines)
            pending.extend(lines)
            if len(pending) >= buffer:
                flush()
        if pending:
            flush()
        if counts["total"] > counts["pages"]:
            sink.write(json_line(_note(rel, "warning", (
                f"{rel}: {counts['total']} pages, only the first {counts['pages']} read (max_pages); "
                f"pages {counts['pages'] + 1}-{counts['total']} were not read"))))
        if counts["lines"] == 0:
            sink.write(json_line(_note(rel, "empty", f"{rel}: no text found on its {counts['pages']} page(s)")))
    header = {"document": rel, "status": "ok", "pages": counts["pages"], "pages_in_document": counts["total"],
              "pages_with_text": len(with_text), "lines": counts["lines"]}
    return header, records_path
