"""Lung segmenters from segmentation-models-pytorch, built from a config."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.runtime import device_of, run_batched
from cxrlab.core.transforms import to_tensor
from cxrlab.segmentation.config import SegmentationEval, SegmenterConfig, names_weight_file


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
    _check_encoder_name(cfg.encoder)
    kwargs: dict[str, Any] = {"encoder_depth": cfg.encoder_depth}
    if cfg.arch.lower().startswith("unet"):
        kwargs["decoder_channels"] = list(cfg.decoder_channels)
    weights_file = _weights_file(cfg)
    try:
        model = smp.create_model(
            cfg.arch,
            encoder_name=cfg.encoder,
            encoder_weights=None if weights_file else cfg.encoder_weights,
            in_channels=cfg.in_channels,
            classes=1,
            **kwargs,
        )
    except (KeyError, ValueError, OSError) as exc:  # OSError: hub weights unreachable
        raise ConfigError(f"cannot build segmenter {cfg.arch}/{cfg.encoder}: {exc}") from exc
    if weights_file:
        _load_encoder_file(model, cfg, weights_file)
    return model


def _check_encoder_name(name: str) -> None:
    """Raise a ConfigError, with the nearest known names, for an encoder smp cannot build.

    smp's own error lists all of its ~150 encoders; a ``tu-`` name timm does not know
    fails deep inside timm with a RuntimeError.
    """
    import difflib

    import segmentation_models_pytorch as smp
    import timm

    timm_name = name.removeprefix("tu-")
    known = timm.list_models() if name.startswith("tu-") else smp.encoders.get_encoder_names()
    if timm_name in known:
        return
    near = difflib.get_close_matches(timm_name, known, n=3)
    prefix = "tu-" if name.startswith("tu-") else ""
    hint = f"did you mean {', '.join(prefix + n for n in near)}? " if near else ""
    raise ConfigError(
        f"segmentation.model.encoder '{name}' is not an encoder smp knows: {hint}(smp's names: "
        "segmentation_models_pytorch.encoders.get_encoder_names(); any timm model as tu-<name>)."
    )


def _weights_file(cfg: SegmenterConfig) -> Path | None:
    """``encoder_weights`` when it names a file (a fetched one), else None (smp's names).

    Raises:
        DataError: If it looks like a path and there is no such file.
        ConfigError: If the encoder is not a timm one (``tu-``), which the file needs.
    """
    weights = cfg.encoder_weights
    if not names_weight_file(weights):
        return None
    if not Path(weights).is_file():
        raise DataError(
            f"segmentation.model.encoder_weights names {weights}, which does not exist: "
            "run `dvc repro fetch_data@efficientnet_lite0` (or the dataset that holds it)."
        )
    if not cfg.encoder.startswith("tu-"):
        raise ConfigError(
            f"a weight file needs a timm encoder (tu-<name>), not '{cfg.encoder}': set "
            "segmentation.model.encoder, e.g. to tu-tf_efficientnet_lite0."
        )
    return Path(weights)


def _load_encoder_file(model: nn.Module, cfg: SegmenterConfig, path: Path) -> None:
    """Copy a whole-network weight file into the smp encoder's timm feature network.

    The file's first convolution sees RGB; for ``in_channels`` 1 its kernels are summed
    over the colour channels, as timm does for pretrained weights on grey input.
    """
    from timm.models import adapt_input_conv

    from cxrlab.core.pretrained import timm_state

    state = timm_state(cfg.encoder.removeprefix("tu-"), path)
    encoder = model.encoder.model
    target = encoder.state_dict()
    picked = {}
    for name, value in target.items():
        source = state[name]
        if source.shape != value.shape and source.ndim == 4 and source.shape[1] == 3:
            source = adapt_input_conv(value.shape[1], source)
        picked[name] = source
    encoder.load_state_dict(picked)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """Return lung logits (N, H, W) for prepared uint8 images (N, H, W)."""
    model.eval()
    x = to_tensor(images, images.shape[-1])
    return run_batched(lambda b: model(b)[:, 0], x, batch_size, device_of(model))


@torch.no_grad()
def full_size_probabilities(model: nn.Module, image: np.ndarray, sizes) -> torch.Tensor:
    """Lung probabilities of one raw grayscale image at its own size, one per input side.

    The image is normalised and resized to each side in ``sizes``; each probability map
    is resized back bilinearly. Returns a (len(sizes), H, W) tensor.
    """
    from cxrlab.segmentation.data import normalize_xray, resize

    norm = normalize_xray(image)
    probs = [
        F.interpolate(
            predict_logits(model, resize(norm, size)[None])[None].sigmoid(),
            size=image.shape, mode="bilinear", align_corners=False,
        )[0, 0]
        for size in sizes
    ]  # fmt: skip
    return torch.stack(probs)


def predict_full_size(
    model: nn.Module,
    image: np.ndarray,
    image_size: int,
    threshold: float = 0.5,
    input_sizes: Sequence[int] | None = None,
) -> np.ndarray:
    """Segment one raw grayscale image at its own size.

    The mean of :func:`full_size_probabilities` over ``input_sizes`` (default: the
    network's ``image_size`` alone) is thresholded.

    Returns:
        A boolean lung mask with the image's shape.
    """
    sizes = input_sizes or (image_size,)
    return full_size_probabilities(model, image, sizes).mean(0).numpy() > threshold


def full_size_predictor(
    model: nn.Module, meta: dict[str, Any], cfg: SegmentationEval
) -> Callable[[np.ndarray], np.ndarray]:
    """A map from raw grayscale images to boolean lung masks.

    ``cfg`` (``segmentation.eval``) gives the input sizes and the threshold; ``meta`` is
    the saved config that :func:`load_segmenter` returns.
    """
    return partial(
        predict_full_size, model, image_size=meta["image_size"],
        threshold=cfg.threshold, input_sizes=cfg.input_sizes,
    )  # fmt: skip


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
