"""Diffusers Stable Diffusion 1.x weights to the original single-file layout (CompVis / LDM keys).

AUTOMATIC1111 and ComfyUI load one ``.safetensors`` with ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VAE) and ``cond_stage_model.transformer.*`` (CLIP text encoder). diffusers
reads that layout (``from_single_file``) but does not write it; this module does, for any block
count and ``layers_per_block``, and the tests check it by loading the file back with diffusers.
"""

from __future__ import annotations

from typing import Any

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}" if tail else table.get(head, head)


def _unet_block(blocks: str, index: int, kind: str, rest: list[str]) -> str:
    """A resnet (slot 0, renamed) or attention (slot 1, same names) inside input/output block ``index``."""
    inner = ".".join(rest)
    if kind == "resnets":
        return f"{blocks}.{index}.0.{_rename_resnet(inner, _RESNET)}"
    return f"{blocks}.{index}.1.{inner}"


def unet_to_original(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """UNet2DConditionModel state dict -> ``model.diffusion_model.*`` keys."""
    lpb = config["layers_per_block"]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = None
        for prefix, target in fixed.items():
            if key.startswith(prefix + "."):
                new = target + key[len(prefix):]
        if parts[0] == "down_blocks":
            i, kind = int(parts[1]), parts[2]
            if kind in ("resnets", "attentions"):
                new = _unet_block("input_blocks", (lpb + 1) * i + int(parts[3]) + 1, kind, parts[4:])
            elif kind == "downsamplers":
                new = f"input_blocks.{(lpb + 1) * (i + 1)}.0.op." + ".".join(parts[5:])
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = (f"middle_block.{2 * j}.{_rename_resnet(rest, _RESNET)}" if kind == "resnets"
                   else f"middle_block.1.{rest}")
        elif parts[0] == "up_blocks":
            i, kind = int(parts[1]), parts[2]
            if kind in ("resnets", "attentions"):
                new = _unet_block("output_blocks", (lpb + 1) * i + int(parts[3]), kind, parts[4:])
            elif kind == "upsamplers":
                slot = 2 if up_has_attn[i] else 1
                new = f"output_blocks.{(lpb + 1) * i + lpb}.{slot}." + ".".join(parts[4:])
        if new is None:
            raise KeyError(f"UNet weight {key!r} has no place in the original layout")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_original(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """AutoencoderKL state dict -> ``first_stage_model.*`` keys (attention weights as 1x1 convs)."""
    n = len(config["block_out_channels"])
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key
        if parts[0] in ("encoder", "decoder"):
            side, where = parts[0], parts[1]
            if where in ("down_blocks", "up_blocks"):
                i = int(parts[2])
                level = i if side == "encoder" else n - 1 - i
                name = "down" if side == "encoder" else "up"
                if parts[3] == "resnets":
                    rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                    new = f"{side}.{name}.{level}.block.{parts[4]}.{rest}"
                else:  # downsamplers.0.conv / upsamplers.0.conv
                    kind = "downsample" if side == "encoder" else "upsample"
                    new = f"{side}.{name}.{level}.{kind}." + ".".join(parts[5:])
            elif where == "mid_block":
                if parts[2] == "resnets":
                    rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
                    new = f"{side}.mid.block_{int(parts[3]) + 1}.{rest}"
                else:
                    rest = ".".join(parts[4:])
                    for a, b in _VAE_ATTN.items():
                        if rest.startswith(a + "."):
                            rest = b + rest[len(a):]
                    new = f"{side}.mid.attn_1.{rest}"
                    if value.ndim == 2:  # the original attention uses 1x1 convolutions
                        value = value[:, :, None, None]
            elif where == "conv_norm_out":
                new = f"{side}.norm_out." + ".".join(parts[2:])
        out["first_stage_model." + new] = value
    return out


def text_encoder_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextModel state dict -> ``cond_stage_model.transformer.*`` keys."""
    return {"cond_stage_model.transformer." + k: v for k, v in state.items() if not k.endswith("position_ids")}


def pipeline_to_original(pipe: Any) -> dict[str, Any]:
    """One state dict holding UNet, VAE and text encoder of a StableDiffusionPipeline."""
    state = {}
    state.update(unet_to_original(pipe.unet.state_dict(), dict(pipe.unet.config)))
    state.update(vae_to_original(pipe.vae.state_dict(), dict(pipe.vae.config)))
    state.update(text_encoder_to_original(pipe.text_encoder.state_dict()))
    return {k: v.contiguous() for k, v in state.items()}
