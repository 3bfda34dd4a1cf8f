"""The untrained starting points: a small Stable Diffusion pipeline, a small CLIP and a small DINO, of the real classes.

``build_drawing`` writes a ``StableDiffusionPipeline`` folder (``AutoencoderKL``,
``UNet2DConditionModel``, ``CLIPTextModel`` + ``CLIPTokenizer``, SD 1.x's scheduler settings, no
safety checker), so the trained model loads wherever a hub id or folder of SD 1.x does (DreamBooth
training, prior images, sampling). ``build_clip`` writes a ``CLIPModel`` with a ``CLIPProcessor``;
``build_dino`` a ``ViTModel`` with a ``ViTImageProcessor``, which load as facebook/dino-vits16 does.
Both use one tokenizer: a CLIP BPE whose merges spell the domain's words whole
(``inkbooth.drawing.domain.WORDS``), so a caption is one token per word.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from inkbooth.config import option


@dataclasses.dataclass
class DrawingShape:
    """Shape of the drawing model (VAE, UNet, text encoder)."""

    sample_size: int = option(64, "picture size in pixels", min=8)
    vae_channels: list[int] = option([16, 32, 64], "VAE block widths; n blocks shrink by 2^(n-1) (3: 64 px -> 16)")
    vae_layers: int = option(1, "resnets per VAE block", min=1)
    latent_channels: int = option(4, "latent channels (SD's 4)", min=1)
    unet_channels: list[int] = option([32, 64, 128], "UNet block widths (attention in all but the last)")
    unet_layers: int = option(1, "resnets per UNet block", min=1)
    attention_heads: int = option(4, "UNet attention heads per block", min=1)
    text_hidden: int = option(128, "text encoder width (= the UNet's cross-attention width)", min=8)
    text_layers: int = option(3, "text encoder layers", min=1)
    text_heads: int = option(4, "text encoder attention heads", min=1)
    max_length: int = option(32, "prompt length in tokens (the domain's longest caption is 20)", min=8)
    norm_groups: int = option(8, "group norm groups (UNet and VAE)", min=1)
    seed: int = option(0, "seed of the random weights")


@dataclasses.dataclass
class ClipShape:
    """Shape of the small CLIP (vision and text towers, shared projection width)."""

    image_size: int = option(64, "input size in pixels", min=8)
    patch_size: int = option(8, "ViT patch size", min=1)
    vision_hidden: int = option(128, "vision tower width", min=8)
    vision_layers: int = option(4, "vision tower layers", min=1)
    text_hidden: int = option(128, "text tower width", min=8)
    text_layers: int = option(3, "text tower layers", min=1)
    heads: int = option(4, "attention heads (both towers)", min=1)
    projection: int = option(128, "joint embedding width", min=8)
    max_length: int = option(32, "prompt length in tokens", min=8)
    seed: int = option(0, "seed of the random weights")


@dataclasses.dataclass
class DinoShape:
    """Shape of the small DINO: a ViT like facebook/dino-vits16's, at the domain's size."""

    image_size: int = option(64, "input size in pixels", min=8)
    patch_size: int = option(8, "ViT patch size", min=1)
    hidden: int = option(128, "width", min=8)
    layers: int = option(4, "transformer layers", min=1)
    heads: int = option(4, "attention heads", min=1)
    mlp: int = option(512, "width of each layer's MLP", min=8)
    seed: int = option(0, "seed of the random weights")


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one word: merge the best-ranked adjacent pair, everywhere, until none applies."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pair = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def tokenizer_files(folder: Path, words: list[str]) -> None:
    """vocab.json and merges.txt of a CLIP BPE that spells every one of ``words`` as one token.

    A word's merges are added one at a time, each for the first pair its current segmentation still
    has, ranked after every merge before it: a merge ranked last is only taken where no other
    applies, so the words already whole stay whole (merges built word by word, left to right, do not
    promise that: a shared pair ranked early splits a later word elsewhere)."""
    import json

    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab: list[str] = byte_chars + [c + "</w>" for c in byte_chars]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(parts := _bpe(word, ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            if parts[0] + parts[1] not in vocab:
                vocab.append(parts[0] + parts[1])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in ranks), encoding="utf-8")


def tokenizer(max_length: int) -> object:
    """The domain's CLIPTokenizer: every word of ``domain.WORDS`` is one token."""
    import tempfile

    from transformers import CLIPTokenizer

    from inkbooth.drawing import domain

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_files(Path(tmp), list(domain.WORDS))
        return CLIPTokenizer(f"{tmp}/vocab.json", f"{tmp}/merges.txt", model_max_length=max_length)


def build_drawing(out_dir: str | Path, shape: DrawingShape | None = None) -> Path:
    """Write an untrained drawing model (a StableDiffusionPipeline folder, safetensors) to ``out_dir``."""
    import torch

    from inkbooth import quiet

    quiet.library_notes()
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = shape or DrawingShape()
    out = Path(out_dir)
    tok = tokenizer(cfg.max_length)
    torch.manual_seed(cfg.seed)
    n = len(cfg.unet_channels)
    factor = 2 ** (len(cfg.vae_channels) - 1)
    unet = UNet2DConditionModel(
        sample_size=cfg.sample_size // factor, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        block_out_channels=tuple(cfg.unet_channels), layers_per_block=cfg.unet_layers,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        # diffusers' legacy name: SD 1.x's attention_head_dim (8) is its number of heads.
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.attention_heads, norm_num_groups=cfg.norm_groups,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels, block_out_channels=tuple(cfg.vae_channels),
        down_block_types=("DownEncoderBlock2D",) * len(cfg.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(cfg.vae_channels), layers_per_block=cfg.vae_layers,
        norm_num_groups=cfg.norm_groups, sample_size=cfg.sample_size,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_hidden * 4,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, max_position_embeddings=cfg.max_length,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        hidden_act="quick_gelu",
    ))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_clip(out_dir: str | Path, shape: ClipShape | None = None) -> Path:
    """Write an untrained small CLIP (CLIPModel + CLIPProcessor, safetensors) to ``out_dir``."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
    )

    cfg = shape or ClipShape()
    out = Path(out_dir)
    tok = tokenizer(cfg.max_length)
    torch.manual_seed(cfg.seed)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_hidden * 4,
                          num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.heads,
                          max_position_embeddings=cfg.max_length, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, hidden_act="quick_gelu")
    vision = CLIPVisionConfig(hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_hidden * 4,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.heads,
                              image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_act="quick_gelu")
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                 projection_dim=cfg.projection))
    model.save_pretrained(out, safe_serialization=True)
    # CLIP's own preprocessing at this size: resize the short side, centre-crop, CLIP's mean and std.
    images = CLIPImageProcessor(size={"shortest_edge": cfg.image_size},
                                crop_size={"height": cfg.image_size, "width": cfg.image_size})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(out)
    return out


# DINO's preprocessing (facebook/dino-vits16): ImageNet's mean and std.
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build_dino(out_dir: str | Path, shape: DinoShape | None = None) -> Path:
    """Write an untrained small DINO backbone (ViTModel, no pooler, + ViTImageProcessor) to ``out_dir``:
    ``AutoModel`` and ``AutoImageProcessor`` load it as they load facebook/dino-vits16."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = shape or DinoShape()
    out = Path(out_dir)
    torch.manual_seed(cfg.seed)
    vit = ViTConfig(hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                    intermediate_size=cfg.mlp, image_size=cfg.image_size, patch_size=cfg.patch_size,
                    hidden_act="gelu", qkv_bias=True)
    # DINO's metric reads last_hidden_state[:, 0] (the CLS token); no pooler, as DINO has none.
    ViTModel(vit, add_pooling_layer=False).save_pretrained(out, safe_serialization=True)
    size = {"height": cfg.image_size, "width": cfg.image_size}
    ViTImageProcessor(do_resize=True, size=size, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(out)
    return out


def weight_bytes(folder: str | Path) -> int:
    """Bytes of the weights (every .safetensors file) under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors"))
