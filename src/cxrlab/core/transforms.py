"""Image tensors: one preprocessing for training, evaluation, retrieval and generation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """Turn uint8 images (N, H, W) into float (N, 1, S, S) in [-1, 1].

    Args:
        images: uint8 grayscale images.
        image_size: Output side ``S``; images are resized bilinearly when it differs.

    Returns:
        A float32 tensor scaled to [-1, 1].
    """
    x = torch.as_tensor(images).float().div_(127.5).sub_(1.0).unsqueeze(1)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Invert :func:`to_tensor`: float (N, 1, S, S) in [-1, 1] to uint8 (N, S, S)."""
    return ((x[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
