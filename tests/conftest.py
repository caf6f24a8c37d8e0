"""Shared fixtures: tiny synthetic PneumoniaMNIST files and tiny model configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cxrlab.models.classifier import ClassifierConfig
from cxrlab.training.augment import AugmentConfig
from cxrlab.training.classifier import TrainConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def synthetic_split(
    n: int, rng: np.random.Generator, size: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images; class 1 has a bright blob in the lower-left quadrant."""
    labels = rng.integers(0, 2, n).astype(np.uint8)
    labels[:2] = [0, 1]  # both classes always present
    images = rng.normal(90, 25, (n, size, size))
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - 0.7 * size) ** 2 + (xx - 0.3 * size) ** 2) / (2 * (size / 7) ** 2))
    images += labels[:, None, None] * 120 * blob
    return np.clip(images, 0, 255).astype(np.uint8), labels[:, None]


def write_npz(path: Path, sizes=(64, 24, 24), seed: int = 0, **overrides) -> Path:
    """Write a PneumoniaMNIST-layout npz; ``overrides`` replace or (None) drop keys."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = synthetic_split(n, rng)
    for key, value in overrides.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "pneumoniamnist.npz")


@pytest.fixture
def tiny_model_cfg() -> ClassifierConfig:
    return ClassifierConfig(arch="resnet18", width=8, stem="small")


@pytest.fixture
def tiny_train_cfg() -> TrainConfig:
    return TrainConfig(
        seed=0,
        epochs=3,
        batch_size=16,
        lr=1e-2,
        augment=AugmentConfig(rotate_deg=5, shift=0.05, brightness=0.05),
    )
