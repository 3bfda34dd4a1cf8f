"""Tiny models of the real architectures, built offline from configs, seeded.

They are saved with ``save_pretrained`` in exactly the layout of the real checkpoints, so every
loading path (hub id, local folder, ``s3://``) is the one a real model takes. They do not read or
draw anything meaningful: they exist to exercise the code, not to score.

The TrOCR here is a ``VisionEncoderDecoderModel`` (ViT encoder + ``TrOCRForCausalLM`` decoder) with a
``TrOCRProcessor`` whose byte-level BPE tokenizer (RoBERTa's kind, like ``microsoft/trocr-base-printed``)
is trained locally on a fixed text. Its output projection is scaled up so that, like a trained model's,
its next-token choices are clear rather than near-ties; quantisation parity then measures the
quantiser, not the coin flips of a random network.

The same builder makes the starting point of the small readers that ``inkbooth.ocr.training.finetune`` trains
(``READER_SHAPE``): a character-level tokenizer (still RoBERTa's byte-level kind: every byte is a
token, and each character of the alphabet that takes several UTF-8 bytes is merged into one), an image
processor that keeps the line's aspect ratio (DETR's: scale to fit the input, which for a line means
to its height, then pad right and below, so every line starts at the left edge with glyphs of one
size), and tall, narrow patches that cut a line into columns.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from inkbooth.config import option

_CORPUS = """\
Invoice number 20931 dated 14 March 2026. Total amount due: 1,284.50 EUR. Payment within 30 days.
The quick brown fox jumps over the lazy dog. Page 3 of 12. Order reference ABX-4471, quantity 12.
Printed documents are read line by line; each line is a crop of the page with its box.
Account holder, bank name, address, postal code, city, country, telephone, email, tax id, VAT.
Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.
0123456789 !"#$%&'()*+,-./:;<=>?@[]_{|}~ ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz
"""


@dataclasses.dataclass
class TinyTrOCRConfig:
    """Shape of the tiny TrOCR (about 9 MB of ONNX: big enough that weights, not graph, dominate the files)."""

    image_height: int = option(32, "encoder input height (pixels)")
    image_width: int = option(128, "encoder input width (pixels); wide, because inputs are text lines")
    patch_size: int = option(8, "ViT patch size (its height, when patch_width is set)")
    patch_width: int = option(0, "ViT patch width (0: square patches of patch_size)")
    hidden_size: int = option(96, "encoder hidden size")
    encoder_layers: int = option(2, "encoder layers")
    d_model: int = option(128, "decoder hidden size (differs from the encoder's, as in trocr-base)")
    decoder_layers: int = option(2, "decoder layers")
    heads: int = option(2, "attention heads (encoder and decoder)")
    decoder_heads: int = option(0, "decoder attention heads (0: same as heads)")
    encoder_intermediate: int = option(0, "encoder MLP width (0: 4 x hidden_size)")
    decoder_ffn: int = option(0, "decoder FFN width (0: 4 x d_model)")
    vocab_size: int = option(400, "BPE vocabulary size, special tokens included")
    max_positions: int = option(128, "decoder positions, hence the longest line in tokens")
    logit_scale: float = option(12.0, "factor on the output projection: peaked, trained-like choices")
    output_vocab: int = option(0, "model vocabulary (0: the tokenizer's); larger pads the embedding and output "
                                  "layer with ids that are never chosen, so benchmarks pay for a real vocabulary")
    seed: int = option(0, "seed of the random weights")
    tokenizer: Literal["bpe", "chars"] = option("bpe", "bpe (trained on a fixed text) or chars (one token per "
                                                      "character of the alphabet, bytes for the rest)")
    alphabet: str = option("", "chars: the characters that get one token each (beyond single bytes)")
    keep_aspect: bool = option(False, "resize lines to the input height keeping their aspect ratio, then pad right "
                                      "and below (DetrImageProcessor); else stretch to the input size (ViT's)")
    dropout: float = option(0.1, "decoder dropout (TrOCR's default)")


# The shape of microsoft/trocr-small-printed (DeiT-small encoder, 6-layer decoder), random weights:
# for benchmarks, where the tiny model's size would only measure overheads.
TROCR_SMALL_SHAPE = TinyTrOCRConfig(
    image_height=384, image_width=384, patch_size=16, hidden_size=384, encoder_layers=12, d_model=256,
    decoder_layers=6, heads=6, decoder_heads=8, encoder_intermediate=1536, decoder_ffn=1024, max_positions=256,
    output_vocab=64044,
)
# microsoft/trocr-base-printed's shape (ViT-base encoder, 12-layer 1024-wide decoder, RoBERTa's vocabulary).
TROCR_BASE_SHAPE = TinyTrOCRConfig(
    image_height=384, image_width=384, patch_size=16, hidden_size=768, encoder_layers=12, d_model=1024,
    decoder_layers=12, heads=12, decoder_heads=16, encoder_intermediate=3072, decoder_ffn=4096, max_positions=512,
    output_vocab=50265,
)


# The starting point of the small readers (see inkbooth.readers): 24-pixel lines up to 512 pixels wide
# cut into 128 columns of 24 x 4 pixels, a 4-layer encoder and a 2-layer decoder; about 5.7 MB.
READER_SHAPE = TinyTrOCRConfig(
    image_height=24, image_width=512, patch_size=24, patch_width=4, hidden_size=128, encoder_layers=4, d_model=160,
    decoder_layers=2, heads=4, max_positions=96, logit_scale=1.0, tokenizer="chars", keep_aspect=True, dropout=0.0,
)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4, as in trocr-base


def _char_tokenizer_files(folder: Path, alphabet: str) -> None:
    """vocab.json and merges.txt of a byte-level BPE with one token per byte and per character of
    ``alphabet`` (characters of several UTF-8 bytes are merged whole, nothing longer)."""
    from transformers.models.roberta.tokenization_roberta import bytes_to_unicode

    byte_char = bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab[byte_char[b]] = len(vocab)
    merges: list[str] = []
    for ch in dict.fromkeys(alphabet):
        pieces = [byte_char[b] for b in ch.encode("utf-8")]
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")


def _tokenizer(cfg: TinyTrOCRConfig) -> Any:
    import tempfile

    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        if cfg.tokenizer == "chars":
            _char_tokenizer_files(Path(tmp), cfg.alphabet)
        else:
            bpe = ByteLevelBPETokenizer()
            bpe.train_from_iterator(_CORPUS.splitlines() * 4, vocab_size=cfg.vocab_size, min_frequency=2,
                                    special_tokens=SPECIAL_TOKENS, show_progress=False)
            bpe.save_model(tmp)
        return RobertaTokenizerFast(vocab_file=f"{tmp}/vocab.json", merges_file=f"{tmp}/merges.txt",
                                    model_max_length=cfg.max_positions)


def _image_processor(cfg: TinyTrOCRConfig) -> Any:
    if cfg.keep_aspect:
        from transformers import DetrImageProcessor

        # Lines keep their shape (glyphs have one size in every line, however long it is) and start at
        # the left edge; the rest is padded with 0 after normalising: mid-gray, neither paper nor ink.
        return DetrImageProcessor(do_resize=True, size={"max_height": cfg.image_height, "max_width": cfg.image_width},
                                  resample=2, do_rescale=True, do_normalize=True, image_mean=[0.5, 0.5, 0.5],
                                  image_std=[0.5, 0.5, 0.5], do_pad=True,
                                  pad_size={"height": cfg.image_height, "width": cfg.image_width})
    from transformers import ViTImageProcessor

    return ViTImageProcessor(do_resize=True, size={"height": cfg.image_height, "width": cfg.image_width}, resample=2,
                             do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def build_tiny_trocr(out_dir: str | Path, config: TinyTrOCRConfig | None = None) -> Path:
    """Write a tiny TrOCR checkpoint (model, tokenizer, image processor) to ``out_dir``."""
    import torch
    from transformers import (
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    cfg = config or TinyTrOCRConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(cfg)
    patch = [cfg.patch_size, cfg.patch_width] if cfg.patch_width else cfg.patch_size
    encoder = ViTConfig(
        image_size=[cfg.image_height, cfg.image_width], patch_size=patch, num_channels=3,
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.encoder_layers, num_attention_heads=cfg.heads,
        intermediate_size=cfg.encoder_intermediate or cfg.hidden_size * 4, qkv_bias=False,
    )
    decoder = TrOCRConfig(
        vocab_size=max(len(tokenizer), cfg.output_vocab), d_model=cfg.d_model, decoder_layers=cfg.decoder_layers,
        decoder_attention_heads=cfg.decoder_heads or cfg.heads, decoder_ffn_dim=cfg.decoder_ffn or cfg.d_model * 4,
        max_position_embeddings=cfg.max_positions, use_learned_position_embeddings=True,
        layernorm_embedding=True, activation_function="gelu", scale_embedding=False, dropout=cfg.dropout,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model_cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    # As in microsoft/trocr-base-printed: decoding starts from </s> (id 2).
    model_cfg.decoder_start_token_id = tokenizer.eos_token_id
    model_cfg.pad_token_id = tokenizer.pad_token_id
    model_cfg.eos_token_id = tokenizer.eos_token_id

    torch.manual_seed(cfg.seed)
    model = VisionEncoderDecoderModel(model_cfg)
    with torch.no_grad():
        model.decoder.output_projection.weight.mul_(cfg.logit_scale)
        # Padded ids score 0, far below the chosen tokens' logits: they cost compute, never appear.
        model.decoder.output_projection.weight[len(tokenizer):] = 0
    model.generation_config.decoder_start_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)

    TrOCRProcessor(image_processor=_image_processor(cfg), tokenizer=tokenizer).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# Stable Diffusion
# ---------------------------------------------------------------------------------------------

_SD_WORDS = (
    "a photo of sks dog cat person man woman in the on at with by and beach forest city snow street "
    "painting drawing portrait style oil watercolor sitting running red blue green small big high quality "
    "bad blurry low resolution picture image toy backpack house garden"
).split()


@dataclasses.dataclass
class TinySDConfig:
    """Shape of the tiny Stable Diffusion 1.x (UNet, VAE, CLIP text encoder)."""

    sample_size: int = option(32, "image size in pixels (latents are half of it)")
    unet_channels: list[int] = option([32, 64], "UNet block widths")
    vae_channels: list[int] = option([32, 64], "VAE block widths")
    text_hidden: int = option(32, "CLIP text encoder width (= UNet cross-attention width)")
    text_layers: int = option(2, "CLIP text encoder layers")
    attention_heads: int = option(8, "UNet attention heads per block (attention at the full latent size dominates "
                                     "the cost of large latents)")
    max_length: int = option(77, "prompt length in tokens, as in SD 1.x")
    seed: int = option(0, "seed of the random weights")


def _clip_tokenizer_files(folder: Path, words: list[str]) -> None:
    """vocab.json and merges.txt of a CLIP BPE whose merges spell out ``words`` whole."""
    import json

    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab: list[str] = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[str] = []
    seen = set(vocab)
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            a, b = pieces[0], pieces[1]
            merged = a + b
            if f"{a} {b}" not in merges:
                merges.append(f"{a} {b}")
            if merged not in seen:
                seen.add(merged)
                vocab.append(merged)
            pieces = [merged] + pieces[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_tiny_sd(out_dir: str | Path, config: TinySDConfig | None = None) -> Path:
    """Write a tiny Stable Diffusion 1.x pipeline in diffusers format (safetensors) to ``out_dir``."""
    import tempfile

    import torch

    from inkbooth import quiet

    quiet.library_notes()
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = config or TinySDConfig()
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        _clip_tokenizer_files(Path(tmp), _SD_WORDS)
        tokenizer = CLIPTokenizer(f"{tmp}/vocab.json", f"{tmp}/merges.txt", model_max_length=cfg.max_length)
    torch.manual_seed(cfg.seed)
    n = len(cfg.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=cfg.sample_size // 2 ** (len(cfg.vae_channels) - 1), in_channels=4, out_channels=4,
        block_out_channels=tuple(cfg.unet_channels), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        # diffusers' legacy name: SD 1.x's attention_head_dim (8) is its number of heads.
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.attention_heads, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(cfg.vae_channels),
        down_block_types=("DownEncoderBlock2D",) * len(cfg.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(cfg.vae_channels), layers_per_block=1, norm_num_groups=8,
        sample_size=cfg.sample_size,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_hidden * 4,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=cfg.max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="quick_gelu",
    ))
    # SD 1.x's own scheduler settings (and its default sampler, PNDM).
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_judges(out_dir: str | Path) -> tuple[Path, Path]:
    """A tiny random CLIP and DINO ViT at ``out_dir``/clip and /dino, saved as openai/clip-vit-base-patch32
    and facebook/dino-vits16 are (the DreamBooth evaluation's judges), 32 px; (clip folder, dino folder)."""
    from inkbooth.drawing import build

    out = Path(out_dir)
    clip = build.build_clip(out / "clip", build.ClipShape(image_size=32, vision_hidden=32, vision_layers=1,
                                                          text_hidden=32, text_layers=1, heads=2, projection=16))
    dino = build.build_dino(out / "dino", build.DinoShape(image_size=32, hidden=32, layers=1, heads=2, mlp=64))
    return clip, dino
