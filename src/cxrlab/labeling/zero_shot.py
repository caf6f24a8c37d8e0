"""Prompt-ensemble labelling with a CLIP, and its calibration on validation data."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from cxrlab.core.errors import ConfigError
from cxrlab.labeling.model import ClipBundle


def class_embeddings(
    bundle: ClipBundle, prompts: dict[str, list[str]], class_names: list[str]
) -> torch.Tensor:
    """One embedding per class: the normalised mean of its prompts' embeddings.

    Raises:
        ConfigError: If there are no prompts at all, or a class has none.
    """
    if not prompts or not any(prompts.values()):
        raise ConfigError("clip.label.prompts is empty: give at least one prompt per class.")
    rows = []
    for name in class_names:
        if not prompts.get(name):
            raise ConfigError(f"clip.label.prompts has no prompt for class '{name}'.")
        emb = bundle.encode_texts(list(prompts[name])).mean(0)
        rows.append(emb / emb.norm())
    return torch.stack(rows)


def binary_logit(image_emb: torch.Tensor, class_emb: torch.Tensor) -> np.ndarray:
    """The positive-versus-negative cosine margin per image, shape (N,).

    For two classes the softmax of ``s * cos`` is a sigmoid of ``s * (cos_1 - cos_0)``,
    so this margin times a fitted scale is the logit of class 1.
    """
    cos = (image_emb @ class_emb.T).double().numpy()
    return cos[:, 1] - cos[:, 0]


def fit_scale(margin: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling: the scale ``s`` minimising the NLL of ``sigmoid(s * margin)``."""

    def nll(log_s: float) -> float:
        z = np.exp(log_s) * margin
        return float(np.mean(np.logaddexp(0, z) - labels * z))

    result = minimize_scalar(nll, bounds=(-3, 7), method="bounded")
    return float(np.exp(result.x))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0, -z))


def calibrate_and_label(
    margins: dict[str, np.ndarray],
    val_labels: np.ndarray,
    calibrate: bool,
    threshold_method: str,
) -> tuple[dict[str, np.ndarray], float, float]:
    """Turn cosine margins into calibrated probabilities and pick a threshold, on val only.

    Args:
        margins: Per split, the class-1-minus-class-0 cosine margins (see :func:`binary_logit`).
        val_labels: Ground truth of the ``val`` split, the only labels used.
        calibrate: Fit the temperature on val; otherwise use CLIP's conventional scale 100.
        threshold_method: How :func:`choose_threshold` picks the threshold on val.

    Returns:
        Per-split probabilities of class 1, the scale applied, and the threshold.
    """
    from cxrlab.classification.evaluate import choose_threshold

    scale = fit_scale(margins["val"], val_labels) if calibrate else 100.0
    prob = {split: sigmoid(scale * m) for split, m in margins.items()}
    threshold = choose_threshold(val_labels, prob["val"], threshold_method)
    return prob, scale, threshold
