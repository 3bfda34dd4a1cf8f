"""Embedders that judge generated pictures: CLIP (image and text) and DINO (image), as DreamBooth does.

* ``Clip``: a ``CLIPModel`` and its ``CLIPProcessor``; unit-length image and text embeddings. CLIP-I
  (subject fidelity) and CLIP-T (prompt fidelity) are cosines between them.
* ``Dino``: a self-supervised ViT (``facebook/dino-vits16`` in the DreamBooth paper, any
  ``AutoModel`` whose first output token is a CLS token) and its ``AutoImageProcessor``; unit-length
  CLS embeddings. DINO similarity tells one object from another of its class better than CLIP,
  which was trained to name what a picture shows.

Both load from a hub id, a local folder or an ``s3://`` URI through ``inkbooth.models.resolve``,
in fp32, in eval mode, on ``device``. The figures are plain cosines of unit vectors:
``mean_cosine`` (every pair of two sets), ``paired_cosine`` (picture i with picture i) and
``diversity`` (1 - the mean cosine of distinct pictures of one set).
"""

from __future__ import annotations

from typing import Any

BATCH = 32


class Clip:
    """A CLIP model (``source``: hub id, folder or s3:// URI; or ``model`` and ``processor`` already loaded)."""

    def __init__(self, source: str = "", *, device: str = "cpu", model: Any = None, processor: Any = None) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        if model is None:
            from inkbooth import models

            folder = models.resolve(str(source))
            model = CLIPModel.from_pretrained(folder, dtype=torch.float32).eval().to(device)
            processor = CLIPProcessor.from_pretrained(folder)
        self.model, self.processor = model, processor  # a model passed in is used as it is (train or eval mode)
        self.device = next(model.parameters()).device

    def images(self, images: list[Any]) -> Any:
        """Unit-length image embeddings of PIL pictures, one row each."""
        import torch

        with torch.no_grad():
            rows = [self.model.get_image_features(pixel_values=self.processor(
                images=images[i:i + BATCH], return_tensors="pt").pixel_values.to(self.device))
                for i in range(0, len(images), BATCH)]
        return torch.nn.functional.normalize(torch.cat(rows).float().cpu(), dim=-1)

    def texts(self, texts: list[str]) -> Any:
        """Unit-length text embeddings (texts longer than the model's context are cut to it)."""
        import torch

        tokenizer = self.processor.tokenizer
        with torch.no_grad():
            tok = tokenizer(texts, padding=True, truncation=True, max_length=tokenizer.model_max_length,
                            return_tensors="pt").to(self.device)
            out = self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        return torch.nn.functional.normalize(out.float().cpu(), dim=-1)


class Dino:
    """A DINO ViT (``source``: hub id, folder or s3:// URI): the CLS token of its last layer."""

    def __init__(self, source: str = "", *, device: str = "cpu", model: Any = None, processor: Any = None) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        if model is None:
            import json

            from inkbooth import models

            folder = models.resolve(str(source))
            # A ViT's pooler is not part of DINO (its checkpoints may lack it): not built, not warned about.
            vit = json.loads((folder / "config.json").read_text()).get("model_type") == "vit"
            model = AutoModel.from_pretrained(folder, dtype=torch.float32, **({"add_pooling_layer": False} if vit else {}))
            model = model.eval().to(device)
            processor = AutoImageProcessor.from_pretrained(folder)
        self.model, self.processor = model, processor
        self.device = next(model.parameters()).device

    def images(self, images: list[Any]) -> Any:
        """Unit-length CLS embeddings of PIL pictures, one row each."""
        import torch

        with torch.no_grad():
            rows = [self.model(pixel_values=self.processor(images=images[i:i + BATCH], return_tensors="pt")
                               .pixel_values.to(self.device)).last_hidden_state[:, 0]
                    for i in range(0, len(images), BATCH)]
        return torch.nn.functional.normalize(torch.cat(rows).float().cpu(), dim=-1)


def mean_cosine(a: Any, b: Any) -> float:
    """Mean cosine over every (row of a, row of b) pair of unit-length embeddings."""
    return float((a @ b.T).mean())


def paired_cosine(a: Any, b: Any) -> float:
    """Mean cosine of row i of a with row i of b."""
    if len(a) != len(b):
        raise ValueError(f"paired_cosine needs sets of one size, got {len(a)} and {len(b)}")
    return float((a * b).sum(dim=-1).mean())


def diversity(a: Any) -> float:
    """1 - the mean cosine between distinct rows (0: all alike; needs two rows or more)."""
    n = len(a)
    if n < 2:
        raise ValueError("diversity needs at least two pictures")
    sims = a @ a.T
    return float(1.0 - (sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))
