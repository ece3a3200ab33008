"""Nearest-neighbour image search in embedding space (cosine similarity)."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from simclr_core.errors import UserError
from simclr_core.models import Encoder

READABLE = "PNG, JPEG, WebP, BMP, GIF or TIFF"


def cosine_topk(query: torch.Tensor | np.ndarray, bank: torch.Tensor | np.ndarray,
                k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` bank rows most similar to each query row.

    Args:
        query: (Q, F) or (F,) embeddings.
        bank: (N, F) embeddings.

    Returns:
        (similarities (Q, k) in [-1, 1], descending; bank indices (Q, k)); k is clamped to N.
    """
    q = torch.as_tensor(query, dtype=torch.float32)
    b = torch.as_tensor(bank, dtype=torch.float32)
    if q.dim() == 1:
        q = q.unsqueeze(0)
    sims = F.normalize(q, dim=1) @ F.normalize(b, dim=1).T  # (Q, N)
    return sims.topk(min(k, b.shape[0]), dim=1)


def image_from_bytes(data: bytes, size: int, name: str = "the upload") -> torch.Tensor:
    """Decode an uploaded image of any size into a (1, 3, size, size) uint8 tensor.

    Resizes the shorter side to ``size`` and centre-crops, as the dataset folders are stored;
    EXIF rotation is applied and any mode (grey, palette, RGBA) becomes RGB.
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise UserError(f"{name} is not an image that can be read; upload a {READABLE} file") from None
    img = ImageOps.exif_transpose(img).convert("RGB")
    img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).unsqueeze(0)


@torch.no_grad()
def embed_images(encoder: Encoder, images: torch.Tensor, feature: str = "h") -> torch.Tensor:
    """(B, 3, S, S) uint8 -> (B, F) embeddings with the encoder in eval mode, on the encoder's device."""
    device = next(encoder.parameters()).device
    x = images.to(device).float().div_(255)
    encoder.eval()
    return (encoder.features(x) if feature == "h" else encoder(x)).float().cpu()
