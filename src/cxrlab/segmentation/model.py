"""Lung segmenters from segmentation-models-pytorch, built from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.runtime import device_of, run_batched
from cxrlab.core.transforms import to_tensor
from cxrlab.segmentation.config import SegmenterConfig


def build_segmenter(cfg: SegmenterConfig) -> nn.Module:
    """Build an smp model with one output channel (lung logits) from ``cfg``.

    Raises:
        ConfigError: If the architecture or encoder is unknown or the sizes disagree.
    """
    import segmentation_models_pytorch as smp

    if len(cfg.decoder_channels) != cfg.encoder_depth:
        raise ConfigError(
            f"segmentation.model.decoder_channels has {len(cfg.decoder_channels)} entries; "
            f"encoder_depth {cfg.encoder_depth} needs one per stage."
        )
    kwargs: dict[str, Any] = {"encoder_depth": cfg.encoder_depth}
    if cfg.arch.lower().startswith("unet"):
        kwargs["decoder_channels"] = list(cfg.decoder_channels)
    try:
        return smp.create_model(
            cfg.arch,
            encoder_name=cfg.encoder,
            encoder_weights=cfg.encoder_weights,
            in_channels=cfg.in_channels,
            classes=1,
            **kwargs,
        )
    except (KeyError, ValueError, OSError) as exc:  # OSError: hub weights unreachable
        raise ConfigError(f"cannot build segmenter {cfg.arch}/{cfg.encoder}: {exc}") from exc


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """Return lung logits (N, H, W) for prepared uint8 images (N, H, W)."""
    model.eval()
    x = to_tensor(images, images.shape[-1])
    return run_batched(lambda b: model(b)[:, 0], x, batch_size, device_of(model))


@torch.no_grad()
def predict_full_size(
    model: nn.Module, image: np.ndarray, image_size: int, threshold: float = 0.5
) -> np.ndarray:
    """Segment one raw grayscale image at its own size.

    The image is normalised and resized to the network's input, and the lung
    probability is resized back bilinearly before thresholding.

    Returns:
        A boolean lung mask with the image's shape.
    """
    from cxrlab.segmentation.data import normalize_xray, resize

    small = resize(normalize_xray(image), image_size)[None]
    logits = predict_logits(model, small)[None]
    prob = F.interpolate(logits.sigmoid(), size=image.shape, mode="bilinear", align_corners=False)
    return prob[0, 0].numpy() > threshold


def load_segmenter(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a segmenter saved by the train_segmenter stage (weights + config.json).

    Returns:
        The model in eval mode, and the saved config (``model``, ``image_size`` ...).
    """
    from cxrlab.core.checkpoint import load_model_files
    from cxrlab.core.config import from_dict

    weights, meta = load_model_files(directory)
    cfg = from_dict(SegmenterConfig, {**meta["model"], "encoder_weights": None}, where="model")
    model = build_segmenter(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise DataError(f"{directory}: weights do not match its config.json ({exc}).") from exc
    return model.eval(), meta
