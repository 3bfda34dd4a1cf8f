"""The ONNX files of an export: optimum's encoder and decoders, the teacher-forced decoder that
returns cross-attention, and the INT8 and fp16 variants made from the fp32 files.

``export.export_trocr`` calls these in order and gates what they made; each writes one folder.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from inkbooth import artifacts, storage
from inkbooth.ocr.recognition import graphs
from inkbooth.ocr.recognition.exported import onnx_files


def export_optimum(model_dir: Path, out: Path, opset: int) -> None:
    from inkbooth import quiet

    quiet.library_notes()
    from optimum.exporters.onnx import main_export

    with warnings.catch_warnings():  # optimum loads through AutoModelForVision2Seq: optimum's to change
        warnings.filterwarnings("ignore", message="The class `AutoModelForVision2Seq` is deprecated",
                                category=FutureWarning)
        # no_post_process: keep decoder and decoder-with-past as two files, no merged duplicate.
        main_export(str(model_dir), output=out, task="image-to-text-with-past", opset=opset,
                    no_post_process=True, do_validation=False, device="cpu")
    for extra in out.glob("decoder_model_merged*.onnx"):
        extra.unlink()


def export_attention_decoder(model: Any, out_file: Path, opset: int) -> None:
    """The teacher-forced decoder returning logits and cross-attention (see recognize)."""
    import torch

    wrapper = graphs.make_attention_decoder(model)
    enc_dim = model.encoder.config.hidden_size
    ids = torch.tensor([[2, 5, 6, 7]], dtype=torch.long)
    states = torch.randn(1, 11, enc_dim)
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (ids, states), str(out_file), dynamo=False, opset_version=opset,
            input_names=["input_ids", "encoder_hidden_states"], output_names=["logits", "cross_attentions"],
            dynamic_axes={"input_ids": {0: "batch", 1: "target"},
                          "encoder_hidden_states": {0: "batch", 1: "source"},
                          "logits": {0: "batch", 1: "target"},
                          "cross_attentions": {0: "batch", 1: "target", 2: "source"}},
        )


def copy_support_files(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.suffix != ".onnx" and p.name != artifacts.MANIFEST:
            shutil.copy2(p, dest / p.name)


def quantize_int8(fp32: Path, out: Path, preset: str, per_channel: bool, attention: bool) -> None:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    copy_support_files(fp32, out)
    for name in onnx_files(fp32):
        exclude = [] if attention else graphs.activation_matmuls(fp32 / name)
        qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=per_channel,
                                                          nodes_to_exclude=exclude)
        quantizer = ORTQuantizer.from_pretrained(fp32, file_name=name)
        with storage.temp_dir("inkbooth-quantize-") as tmp:
            produced = quantizer.quantize(quantization_config=qconfig, save_dir=tmp, file_suffix=None)
            onnx_file = Path(produced) / name if Path(produced).is_dir() else Path(produced)
            if not onnx_file.exists():
                onnx_file = next(Path(tmp).glob("*.onnx"))
            shutil.move(onnx_file, out / name)


def convert_fp16(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy_support_files(fp32, out)
    for name in onnx_files(fp32):
        model = onnx.load(str(fp32 / name))
        # Inputs and outputs stay fp32 so the same runtime code feeds every variant.
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        onnx.save(half, str(out / name))
