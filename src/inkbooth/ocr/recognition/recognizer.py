"""The recogniser: batches of line images to text, confidences, tokens and their attention.

One code path for both backends. A line wider than the model reads at its own scale is first cut
into overlapping chunks that are read with the other lines and stitched back into one (``chunks``;
``chunk_long_lines``). Per batch of crops: the encoder runs once; ``generate``
(greedy or beam search) reuses its output; then one teacher-forced decoder pass over the chosen
tokens returns their log-probabilities (the line confidence is their mean) and the cross-attention
that token boxes come from. With ONNX Runtime's decoding engine (``decoding``) the search itself
carries both, so no extra pass runs; with an earlier export that pass is
``decoder_attn_model.onnx``; with PyTorch it is the very module that file was exported from.

May import ``inkbooth.ocr.documents`` and the other recognition modules.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

from inkbooth import artifacts
from inkbooth.config import nested, option
from inkbooth.ocr.documents import pages
from inkbooth.ocr.recognition import chunks, leaders, localize
from inkbooth.ocr.recognition.decoding import OrtEngine
from inkbooth.ocr.recognition.exported import (
    DECODER_ATTN,
    _ort_device,
    _providers,
    _session_options,
    choose_variant,
    has_engine,
    load_ort_model,
)
from inkbooth.ocr.recognition.graphs import make_attention_decoder

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RecognizeConfig:
    """How lines are read."""

    backend: Literal["onnx", "torch"] = option("onnx", "onnx (ONNX Runtime, default) or torch")
    variant: Literal["auto", "fp32", "int8", "fp16"] = option(
        "auto", "which exported variant ONNX Runtime runs; auto: on CPU the one the export measured fastest "
                "within its CER budget (its manifest's metrics.variants; fp32 where INT8 costs more CER than "
                "it saves time), on CUDA fp16; an export without that record: INT8 on CPU, fp32 when the "
                "export lacks it")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "cuda when available (auto), or force one")
    num_beams: int = option(4, "beam search width (1 = greedy)", min=1, max=64)
    beam_below: float = option(1.0, "with ONNX Runtime's decoding engine: read every line greedily first and "
                                    "again with the beam search only where its least likely token's probability "
                                    "is below this (1: the beam search on every line; 0: greedy only)",
                               min=0.0, max=1.0)
    max_new_tokens: int = option(128, "longest line in tokens (the library default of 20 truncates lines)",
                                 min=1, max=4096)
    batch_size: int = option(8, "line crops per forward pass", min=1, max=4096)
    threads: int = option(0, "intra-op threads (0: as many as the CPU quota allows, see inkbooth.runtime)",
                          min=0, max=1024)
    token_boxes: bool = option(True, "token and word boxes from cross-attention")
    box_threshold: float = option(0.5, "attention share of the peak that still belongs to a token's box",
                                  min=0.0, max=1.0)
    chunk_long_lines: bool = option(True, "read a line wider than the model reads well in overlapping chunks, "
                                          "cut at word gaps, and stitch their texts (inkbooth.ocr.recognition.chunks)")
    chunk_aspect: float = option(0.0, "the model's aspect (width / height) of a line that fills its input; 0: from "
                                      "its image processor (max_width / max_height: 512/24 for the committed "
                                      "readers; 16 x the input's aspect for one that stretches, as trocr-base's)",
                                 min=0.0, max=1000.0)
    chunk_tolerance: float = option(0.9, "a line wider than this many times chunk_aspect is read in chunks, each "
                                         "no wider than that (nor than chunk_aspect); the Latin reader's CER "
                                         "rises past about 0.9 x its aspect", min=0.1, max=100.0)
    chunk_overlap: float = option(2.0, "how far neighbouring chunks overlap, in line heights (at most a quarter "
                                       "of a chunk)", min=0.5, max=100.0)
    count_leaders: bool = option(True, "rows of dot leaders (a contents page's '. . . . 8') get the number of dots "
                                       "counted in the image, which the decoder miscounts "
                                       "(inkbooth.ocr.recognition.leaders)")
    pages: pages.PagesConfig = option(None, "how pages are read and cut into lines")
    skip_done: bool = option(True, "skip documents whose result already exists for the same input, model and config")

    def __post_init__(self) -> None:
        self.pages = nested(pages.PagesConfig, self.pages, source="pages")

    def validate(self) -> None:
        from inkbooth.config import check_ranges

        check_ranges(self, "recognize")  # the pages config too
        self.pages.validate()
        if self.backend == "torch" and self.variant != "fp32":
            self.variant = "fp32"


@dataclasses.dataclass
class LineResult:
    text: str
    confidence: float  # mean log-probability of the tokens (EOS included)
    tokens: list[str]
    token_logprobs: list[float]
    # Tokens x encoder positions (numpy), or None. For a line read in chunks each token's box drawn
    # on the whole crop's grid (chunks.paint): localize.token_boxes gives the boxes at that grid's
    # resolution; ``boxes`` holds them exactly.
    attention: Any
    # Token boxes in crop pixels where the tokens were not attended over one grid (a line read in
    # chunks, or one whose dot leaders were recounted, with token_boxes on); None otherwise: boxes
    # come from ``attention``.
    boxes: list[tuple[int, int, int, int]] | None = None


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
        runtime.require_usable_gpus(self.config.device, "onnxruntime" if self.config.backend == "onnx" else "torch")
        record = None  # the export's measured variant choice, if it has one
        if (self.dir / artifacts.MANIFEST).is_file():  # an export published here: its current version's files
            manifest = artifacts.read_manifest(str(self.dir))
            self.dir = Path(manifest.location(str(self.dir)))
            record = manifest.metrics.get("variants")
        if self.config.backend == "onnx" and self.config.variant == "auto":
            present = {v for v in ("fp32", "int8", "fp16") if (self.dir / v).is_dir()}
            self.config = dataclasses.replace(self.config, variant=choose_variant(
                "auto", present, _ort_device(self.config.device), record))
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

            providers = _providers(self.config.device)
            self.device = _ort_device(self.config.device)
            if has_engine(root):
                self.engine = OrtEngine(root, providers, _session_options(self.config.threads))
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

    def aspect(self) -> float:
        """The aspect (width / height) of a line that fills the model's input (``chunk_aspect``, or its own)."""
        return self.config.chunk_aspect or chunks.model_aspect(self.processor.image_processor, self.grid)

    def plan(self, image: Any) -> list[tuple[int, int]]:
        """The chunks (x0, x1) a line image is read in: one, the whole line, unless it is too wide."""
        if not self.config.chunk_long_lines or not hasattr(image, "crop"):
            return [(0, image.width if hasattr(image, "width") else 0)]
        width, height = image.size
        aspect = self.aspect()
        if width <= self.config.chunk_tolerance * aspect * height:
            return [(0, width)]
        return chunks.plan(width, height, aspect, overlap=self.config.chunk_overlap,
                           tolerance=self.config.chunk_tolerance, white=chunks.word_gaps(image))

    def read(self, images: list[Any], *, min_new_tokens: int = 0) -> list[LineResult]:
        """Text, confidence, tokens and attention for each line image.

        A line wider than ``chunk_tolerance`` x ``aspect()`` is read in chunks (see ``plan``), with the
        other lines, in forward passes of at most ``max(batch_size, len(images))`` crops, then stitched
        (``chunks.stitch``): its tokens in reading order, token boxes in ``boxes``.
        ``min_new_tokens`` forces that many decoding steps (benchmarks compare equal work with it).
        """
        if not images:
            return []
        plans = [self.plan(img) for img in images]
        if all(len(p) == 1 for p in plans):
            return [self._leaders(img, r) for img, r in zip(images, self._results(*self._decode(images, min_new_tokens)))]
        crops = [img if len(p) == 1 else img.crop((x0, 0, x1, img.height))
                 for img, p in zip(images, plans) for x0, x1 in p]
        per_pass = max(self.config.batch_size, len(images))
        seqs: list[_Sequence] = []
        for i in range(0, len(crops), per_pass):
            seqs += self._sequences(*self._decode(crops[i:i + per_pass], min_new_tokens))
        results, at = [], 0
        for img, spans in zip(images, plans):
            mine, at = seqs[at:at + len(spans)], at + len(spans)
            results.append(self._leaders(img, self._result(mine[0]) if len(spans) == 1 else self._stitched(img, spans, mine)))
        return results

    def _leaders(self, image: Any, res: LineResult) -> LineResult:
        """``res`` with its runs of dots recounted in the image (``leaders``), where they are found in both."""
        if not self.config.count_leaders or not hasattr(image, "crop") or not leaders.text_runs(res.tokens):
            return res
        size = image.size
        placed = res.boxes is not None or res.attention is not None  # boxes of the tokens' own, to pair runs by
        if res.boxes is not None:
            boxes = list(res.boxes)
        elif res.attention is not None:
            boxes = localize.token_boxes(res.attention, self.grid, size, lambda b: b, self.config.box_threshold,
                                         self.content_box(size))
        else:
            boxes = [(0, 0, 0, 0)] * len(res.tokens)
        fixed = leaders.recount(res.tokens, res.token_logprobs, boxes, leaders.dot_runs(image), self.tokenizer.tokenize,
                                placed=placed)
        if fixed is None:
            return res
        tokens, logprobs, boxes = fixed
        return dataclasses.replace(
            res, text=self.tokenizer.decode(self.tokenizer.convert_tokens_to_ids(tokens), skip_special_tokens=True).strip(),
            tokens=tokens, token_logprobs=logprobs,
            attention=chunks.paint(boxes, self.grid, size, self.content_box(size)) if placed else None,
            boxes=boxes if placed else None)

    def _decode(self, images: list[Any], min_new_tokens: int) -> tuple[Any, Any, Any]:
        """Sequences (start token first), their tokens' log-probabilities and cross-attention."""
        import numpy as np
        import torch

        pixel_values = self.processor(images=images, return_tensors="pt").pixel_values
        min_new_tokens = min(min_new_tokens, self.max_new_tokens)
        if self.engine is not None:
            decoded = self.engine.decode(pixel_values.numpy(), num_beams=self.config.num_beams,
                                         max_new_tokens=self.max_new_tokens, min_new_tokens=min_new_tokens,
                                         beam_below=self.config.beam_below)
            return decoded.sequences, decoded.token_logprobs, decoded.attention
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
        return seqs, token_logprobs, cross

    def _sequences(self, seqs: Any, token_logprobs: Any, attention: Any) -> list[_Sequence]:
        """Each sequence (start token first) cut at its end: its tokens, which of them are text, and
        their log-probabilities and attention."""
        import numpy as np

        out = []
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
            visible = [i for i, t in enumerate(ids) if t != self.eos_id and not (i == 0 and t == self.bos_id)]
            out.append(_Sequence([int(t) for t in ids], visible, token_logprobs[b, :n].astype(np.float64),
                                 attention[b, visible]))
        return out

    def _result(self, seq: _Sequence) -> LineResult:
        ids = [seq.ids[i] for i in seq.visible]
        return LineResult(
            text=self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
            confidence=float(seq.logprobs.mean()) if len(seq.ids) else float("-inf"),
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            token_logprobs=[float(seq.logprobs[i]) for i in seq.visible],
            attention=seq.attention if self.config.token_boxes else None,
        )

    def _results(self, seqs: Any, token_logprobs: Any, attention: Any) -> list[LineResult]:
        """Line results from sequences (start token first), their token log-probabilities and attention."""
        return [self._result(s) for s in self._sequences(seqs, token_logprobs, attention)]

    def _stitched(self, image: Any, spans: list[tuple[int, int]], seqs: list[_Sequence]) -> LineResult:
        """One line from the readings of its chunks (``chunks.stitch``), boxes in the crop's pixels."""
        height = image.height
        pieces = []
        for (x0, x1), seq in zip(spans, seqs):
            size = (x1 - x0, height)
            content = self.content_box(size)
            boxes = []
            for row in seq.attention:
                bx0, by0, bx1, by1 = localize.attention_box(row, self.grid, size, self.config.box_threshold, content)
                boxes.append((bx0 + x0, by0, bx1 + x0, by1))
            shown = set(seq.visible)
            first = seq.visible[0] if seq.visible else len(seq.ids)
            last = seq.visible[-1] if seq.visible else -1
            pieces.append(chunks.Piece(
                span=(x0, x1), ids=[seq.ids[i] for i in seq.visible],
                tokens=self.tokenizer.convert_ids_to_tokens([seq.ids[i] for i in seq.visible]),
                logprobs=[float(seq.logprobs[i]) for i in seq.visible], boxes=boxes,
                lead=[float(seq.logprobs[i]) for i in range(first) if i not in shown],
                tail=[float(seq.logprobs[i]) for i in range(last + 1, len(seq.ids)) if i not in shown],
            ))
        line = chunks.stitch(pieces, height)
        keep = self.config.token_boxes
        return LineResult(
            text=self.tokenizer.decode(line.ids, skip_special_tokens=True).strip(), confidence=line.confidence,
            tokens=line.tokens, token_logprobs=line.logprobs,
            attention=chunks.paint(line.boxes, self.grid, image.size, self.content_box(image.size)) if keep else None,
            boxes=line.boxes if keep else None,
        )


@dataclasses.dataclass
class _Sequence:
    """One decoded sequence cut at its end: token ids, which are text, their log-probabilities and
    the text tokens' attention rows."""

    ids: list[int]
    visible: list[int]
    logprobs: Any
    attention: Any


def resolve_model(model: str, config: RecognizeConfig) -> tuple[Path, str]:
    """The local folder and content hash of the model a backend reads.

    ONNX Runtime reads an export artifact (see ``inkbooth.ocr.recognition.export``); PyTorch reads the source
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
        config.variant = choose_variant(config.variant, present, _ort_device(config.device),
                                        manifest.metrics.get("variants"))
    except ValueError as e:
        raise ValueError(f"{model}: {e}; choose one of those, or export it (export config 'variants')") from None
    return artifacts.fetch(model, only=config.variant), manifest.content_hash
