"""The files of an ONNX export and how to open them: names, variants, ONNX Runtime sessions.

One export folder holds a variant folder each (``fp32/``, ``int8/``, ``fp16/``) with the encoder and
either the decoding engine's two graphs or optimum's decoders. Exporting writes these names and
recognising reads them; both take them from here.

Imports nothing of ``inkbooth.ocr``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

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


# The vector features that decide ONNX Runtime's INT8 and fp32 kernels on x86 (MLAS): AVX2's u8 x s8
# products, AVX-512, the VNNI dot products that INT8 gains most from, bf16 and AMX tiles.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The ``CPU_FEATURES`` this CPU has, from /proc/cpuinfo's flags (``cpuinfo``: that file's text)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Flags")):
            flags = set(line.split(":", 1)[-1].split())
            break
    return [f for f in CPU_FEATURES if f in flags]


def cpu_model(cpuinfo: str | None = None) -> str:
    """This CPU's model name (/proc/cpuinfo), or "unknown"."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "unknown")


def auto_variant(available: set[str], device: str, record: dict[str, Any] | None = None,
                 features: list[str] | None = None) -> tuple[str, str]:
    """What ``variant: auto`` runs on ``device`` ("cpu" or "cuda"), and why (a sentence).

    ``record`` is the export's measured choice (its manifest's ``metrics["variants"]``, see
    ``inkbooth.ocr.recognition.variants.measure_variants``): taken when it was measured on this kind of
    device and its variant is present. It is taken on a CPU that lacks a feature the export's machine
    had too (``features``: this CPU's, by default read here), and the sentence says so: the CER side
    of the choice holds on any CPU, and the speed-up it needed was measured, so the variant it chose
    is at worst near fp32's speed here. Without a record (an export from before it was measured, or
    a CUDA worker): fp16 on CUDA, INT8 on CPU (bench/ocr.py on trocr-base shapes), else fp32.
    """
    record = record if isinstance(record, dict) else None
    if record and record.get("device") == device and record.get("choice") in available:
        why = f"measured at export: {record.get('why', 'no reason recorded')}"
        if device == "cpu":
            have = cpu_features() if features is None else features
            lacks = [f for f in record.get("cpu_features", []) if f not in have]
            if lacks:
                why += (f"; this CPU lacks {', '.join(lacks)}, which the export's machine had, so the speeds "
                        "measured there may not hold here (the choice is kept; export on a like machine to "
                        "measure again)")
        return record["choice"], why
    if record and record.get("device") != device:
        because = f"the export measured its variants on {record.get('device', 'another device')}, not {device}"
    elif record:
        because = f"the export's measured choice {record.get('choice')!r} is not among {sorted(available)}"
    else:
        because = "the export records no measured choice"
    order = ("fp16", "fp32") if device == "cuda" else ("int8", "fp32")
    for name in order:
        if name in available:
            rule = ("fp16 on CUDA" if device == "cuda" else "INT8 on CPU") if name == order[0] else \
                f"fp32 ({order[0]} is not in this export)"
            return name, f"{because}; the default rule: {rule}"
    raise ValueError(f"no usable variant in this export (it has {sorted(available)})")


def choose_variant(requested: str, available: set[str], device: str, record: dict[str, Any] | None = None) -> str:
    """The export variant to run: ``requested``, or for "auto" ``auto_variant``'s choice, logged with its reason."""
    if requested != "auto":
        if requested not in available:
            raise ValueError(f"variant {requested!r} is not in this export (it has {sorted(available)})")
        return requested
    name, why = auto_variant(available, device, record)
    log.info("variant auto: %s on %s (%s)", name, device, why)
    return name
