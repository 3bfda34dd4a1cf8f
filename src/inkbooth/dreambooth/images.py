"""Subject and class images for DreamBooth training: listing, content hashes, decoding, tensors.

Holds IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, image_names, set_hash, image_set_hash, load_images and
to_tensor (re-exported by ``inkbooth.dreambooth.train``, where the training loop uses them).
May import the standard library and ``inkbooth`` base modules (storage, artifacts, imaging); never
``inkbooth.dreambooth.train`` or ``inkbooth.dreambooth.publish``. numpy, torch and PIL are imported
inside the functions that need them.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from inkbooth import artifacts, storage

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Larger subject images are refused: a few-KB file can decode to gigabytes (8192 x 8192 is plenty).
MAX_IMAGE_PIXELS = 8192 * 8192


def image_names(uri: str) -> list[str]:
    return [k for k in storage.list_files(uri) if k.lower().endswith(IMAGE_SUFFIXES)]


def set_hash(digests: set[str]) -> str:
    """The identity of an image set: its distinct SHA-256 digests, sorted and hashed."""
    import hashlib

    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def image_set_hash(uri: str) -> str:
    """The content hash ``load_images`` gives the images under ``uri``, from recorded checksums
    where objects carry one (nothing is downloaded then)."""
    import hashlib

    digests = set()
    for name in image_names(uri):
        target = storage.join(uri, name)
        digests.add(storage.stat(target).sha256 or hashlib.sha256(storage.read_bytes(target)).hexdigest())
    return set_hash(digests)


def load_images(uri: str, what: str, *, published: bool = False) -> tuple[list[Any], str]:
    """RGB images under a prefix (subject or class images), and a content hash of the set.

    ``published``: ``uri`` is an artifact (a class-image set); its images are the ones its manifest
    lists, each verified, so a missing or replaced file is an error rather than a silent change.
    """
    import hashlib

    from PIL import Image, UnidentifiedImageError

    from inkbooth.imaging import to_8bit, upright

    manifest = None
    if published:
        try:
            manifest = artifacts.read_manifest(uri)
            names = [f.path for f in manifest.files if f.path.lower().endswith(IMAGE_SUFFIXES)]
        except artifacts.NotPublishedError:
            raise ValueError(f"{uri}: not a finished {what}-image set (no {artifacts.MANIFEST}); "
                             "make it with `inkbooth prior`") from None
    else:
        names = image_names(uri)
    if not names:
        raise ValueError(f"{uri}: no {what} images found ({', '.join(IMAGE_SUFFIXES)})")
    images, digests, seen = [], [], set()
    for name in names:
        if published:
            try:
                data = artifacts.read_bytes(uri, name, manifest)
            except storage.StorageError as e:
                raise ValueError(f"{uri}: the {what}-image set does not match its manifest ({e}); "
                                 "regenerate it (`inkbooth prior`) or restore the file") from None
        else:
            data = storage.read_bytes(storage.join(uri, name))
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            log.warning("%s: %s is a duplicate of another image; used once", uri, name)
            continue
        seen.add(digest)
        try:
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{storage.join(uri, name)}: {img.width}x{img.height} pixels, over the limit of "
                                 f"{MAX_IMAGE_PIXELS}; refused as a possible decompression bomb")
            img.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"{storage.join(uri, name)}: not a readable image: {e}") from None
        # Turned as a viewer shows it; 16-bit, 32-bit and float pixels by their range, not clipped.
        img = to_8bit(upright(img), stretch=False)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img.convert("RGBA"))
        images.append(img.convert("RGB"))
        digests.append(digest)
    return images, set_hash(set(digests))


def to_tensor(img: Any, size: int, center_crop: bool) -> Any:
    """Resize the short side to ``size``, crop a square, scale to [-1, 1] (C, H, W)."""
    import numpy as np
    import torch
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    if center_crop:
        left, top = (w - size) // 2, (h - size) // 2
    else:
        left = int(torch.randint(0, w - size + 1, (1,)).item())
        top = int(torch.randint(0, h - size + 1, (1,)).item())
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
