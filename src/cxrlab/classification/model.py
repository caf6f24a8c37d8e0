"""ResNet classifiers for 1-channel chest X-rays, with embedding access for retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from cxrlab.classification.config import ClassifierConfig
from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.runtime import device_of, run_batched

ARCHS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
}


class Classifier(nn.Module):
    """A ResNet split into ``features`` (pooled embedding) and ``head`` (logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, embed_dim: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.embed_dim = embed_dim

    @property
    def last_conv_block(self) -> nn.Module:
        """The block whose activations Grad-CAM explains (ResNet ``layer4``)."""
        return self.backbone.layer4

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled penultimate embedding, shape (N, embed_dim)."""
        return torch.flatten(self.backbone(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits, shape (N, num_classes)."""
        return self.head(self.features(x))


def build_classifier(cfg: ClassifierConfig) -> Classifier:
    """Build a randomly initialised ResNet classifier from ``cfg``.

    Raises:
        ConfigError: If ``cfg.arch`` is unknown or ``cfg.width`` is not positive.
    """
    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown classifier arch '{cfg.arch}'; expected one of {sorted(ARCHS)}.")
    if cfg.width <= 0 or cfg.width % 8:
        raise ConfigError(f"classifier width must be a positive multiple of 8, got {cfg.width}.")
    net = ARCHS[cfg.arch](num_classes=cfg.num_classes)
    if cfg.width != 64:
        _rescale_width(net, cfg.width / 64)
    stem_out = net.conv1.out_channels
    if cfg.stem == "small":
        net.conv1 = nn.Conv2d(cfg.in_channels, stem_out, 3, stride=1, padding=1, bias=False)
    else:
        net.conv1 = nn.Conv2d(cfg.in_channels, stem_out, 7, stride=2, padding=3, bias=False)
    embed_dim = net.fc.in_features
    backbone = nn.Sequential()
    for name, module in net.named_children():
        if name != "fc":
            backbone.add_module(name, module)
    head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(embed_dim, cfg.num_classes))
    for module in backbone.modules():  # torchvision's ResNet init, also for replaced layers
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return Classifier(backbone, head, embed_dim)


def _rescale_width(net: nn.Module, factor: float) -> None:
    """Scale every conv, batch-norm and the fc input of a ResNet by ``factor`` in place."""

    def scaled(channels: int) -> int:
        return max(8, int(round(channels * factor)))

    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                in_ch = child.in_channels if child is net.conv1 else scaled(child.in_channels)
                new = nn.Conv2d(
                    in_ch,
                    scaled(child.out_channels),
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    bias=child.bias is not None,
                )
                setattr(parent, name, new)
            elif isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.BatchNorm2d(scaled(child.num_features)))
    net.fc = nn.Linear(scaled(net.fc.in_features), net.fc.out_features)


def predict_proba(model: Classifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Return the softmax probability of the positive class (index 1), shape (N,)."""
    model.eval()
    return run_batched(lambda b: model(b).softmax(1)[:, 1], x, batch_size, device_of(model))


def embed(model: Classifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Return the penultimate embeddings, shape (N, embed_dim)."""
    model.eval()
    return run_batched(model.features, x, batch_size, device_of(model))


def load_classifier(directory: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Load a classifier saved by the train_classifier stage.

    Args:
        directory: Holds ``model.safetensors`` and ``config.json`` (whose ``model``
            entry is a :class:`ClassifierConfig`).

    Returns:
        The model in eval mode, and the saved config (image size, class names ...).
    """
    from cxrlab.core.checkpoint import load_model_files
    from cxrlab.core.config import from_dict

    weights, meta = load_model_files(directory)
    model = build_classifier(from_dict(ClassifierConfig, meta["model"], where="model"))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise DataError(f"{directory}: weights do not match its config.json ({exc}).") from exc
    return model.eval(), meta
