"""The files of an ONNX export and how to open them: names, variants, ONNX Runtime sessions.

One export folder holds a variant folder each (``fp32/``, ``int8/``, ``fp16/``) with the encoder and
either the decoding engine's two graphs or optimum's decoders. Exporting writes these names and
recognising reads them; both take them from here.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENCODER, DECODER, DECODER_PAST, DECODER_ATTN = (
    "encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_attn_model.onnx")


LEGACY_FILES = (ENCODER, DECODER, DECODER_PAST, DECODER_ATTN)


KIND = "trocr-onnx"


DECODER_INIT, DECODER_STEP = "decoder_init_model.onnx", "decoder_step_model.onnx"


ENGINE_FILES = (DECODER_INIT, DECODER_STEP)


def has_engine(folder: Path) -> bool:
    """Whether an export variant folder carries this engine's graphs."""
    return all((Path(folder) / name).is_file() for name in ENGINE_FILES)


def onnx_files(folder: Path) -> list[str]:
    """The ONNX graphs of a variant folder (engine or earlier layout)."""
    return sorted(p.name for p in Path(folder).glob("*.onnx"))


def onnx_bytes(folder: Path) -> int:
    return sum((folder / n).stat().st_size for n in onnx_files(folder))


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
    from inkbooth import quiet

    quiet.library_notes()
    from optimum.onnxruntime import ORTModelForVision2Seq

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
