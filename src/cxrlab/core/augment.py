"""Batch augmentation for X-ray tensors, driven by an explicit ``torch.Generator``.

Working on whole batches avoids per-image Python overhead on small images, and the
explicit generator makes an epoch's augmentation a function of (seed, epoch), which
keeps resumed training identical to uninterrupted training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Random transforms, each off when 0.

    Attributes:
        rotate_deg: Maximum absolute rotation, degrees.
        shift: Maximum translation, as a fraction of the image side.
        zoom: Maximum relative zoom in or out.
        hflip: Probability of a horizontal flip (off by default: it moves the heart).
        brightness: Maximum additive brightness change, in [-1, 1] units.
        contrast: Maximum relative contrast change.
    """

    rotate_deg: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0
    hflip: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Apply random affine and intensity transforms to a batch (N, C, H, W) in [-1, 1]."""
    return augment_pair(x, None, cfg, gen)[0]


def augment_pair(
    x: torch.Tensor, mask: torch.Tensor | None, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment images (N, C, H, W) in [-1, 1] and, with the same geometry, their masks.

    Masks (N, 1, H, W) of class codes are resampled with nearest neighbours, so codes
    such as the ignore value survive; intensity changes touch the images only.
    """
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * limit

    if cfg.rotate_deg or cfg.shift or cfg.zoom or cfg.hflip:
        angle = uniform(math.radians(cfg.rotate_deg))
        scale = 1 + uniform(cfg.zoom)
        flip = torch.where(torch.rand(n, generator=gen) < cfg.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, uniform(2 * cfg.shift)], 1),
                torch.stack([sin * flip, cos, uniform(2 * cfg.shift)], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Pad with the image's own border: X-ray borders are dark, not mid-gray.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if mask is not None:
            mask = F.grid_sample(
                mask.float(), grid, mode="nearest", padding_mode="border", align_corners=False
            ).to(mask.dtype)
    if cfg.contrast or cfg.brightness:
        contrast = (1 + uniform(cfg.contrast)).view(n, 1, 1, 1)
        brightness = uniform(cfg.brightness).view(n, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean + brightness).clamp(-1, 1)
    return x, mask
