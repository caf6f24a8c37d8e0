"""Metrics for generated images, in the feature space of the project's own classifier.

Inception features know nothing of chest X-rays, so the Fréchet distance here
("domain FID") uses the penultimate features of the trained PneumoniaMNIST
classifier, and class agreement uses its predictions.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; the imaginary part that
    rounding leaves in the matrix square root is dropped.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets (N>=2, D) of one width, got {a.shape}, {b.shape}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        eye = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root))
    return float(max(value, 0.0))


def class_agreement(prob_positive: np.ndarray, prompted: np.ndarray, threshold: float = 0.5):
    """Share of images the classifier puts in their prompted class (0/1), overall and per class.

    Returns:
        ``{"all": share, 0: share among class-0 prompts, 1: ...}``.
    """
    predicted = (np.asarray(prob_positive) >= threshold).astype(int)
    prompted = np.asarray(prompted).astype(int)
    shares = {"all": float((predicted == prompted).mean())}
    for cls in np.unique(prompted):
        shares[int(cls)] = float((predicted[prompted == cls] == cls).mean())
    return shares


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of distinct rows: a diversity score."""
    x = np.asarray(features, np.float64)
    if len(x) < 2:
        raise ValueError("diversity needs at least two images.")
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    n = len(x)
    return float(np.sqrt(d2)[~np.eye(n, dtype=bool)].mean())


def saturated_fraction(images: np.ndarray, low: int = 5, high: int = 250) -> float:
    """Share of uint8 pixels at the ends of the range (<= ``low`` or >= ``high``).

    Real radiographs have few; a destroyed generator's black-and-white noise is mostly that.
    """
    images = np.asarray(images)
    return float(((images <= low) | (images >= high)).mean())


def score_set(features, prob_positive, prompted, real_features, class_names) -> dict[str, float]:
    """Domain FID against real images, class agreement (overall and per class), diversity."""
    agree = class_agreement(prob_positive, prompted)
    scores = {
        "domain_fid": frechet_distance(features, real_features),
        "class_agreement": agree["all"],
        "diversity": mean_pairwise_distance(features),
    }
    for index, name in enumerate(class_names):
        if index in agree:
            scores[f"class_agreement_{name}"] = agree[index]
    return scores


def compare_samplers(scores: dict[str, dict[str, dict[str, float]]], fast: str, slow: str):
    """Speed-up and FID ratio of sampler ``fast`` over ``slow``, and each LoRA's gain.

    ``scores[sampler][variant]`` holds ``domain_fid``, ``class_agreement`` and
    ``images_per_s``; variants are ``base`` and ``lora``.
    """
    out: dict[str, float] = {}
    for variant in scores[fast]:
        f, s = scores[fast][variant], scores[slow][variant]
        out[f"speedup_{variant}"] = f["images_per_s"] / s["images_per_s"]
        out[f"fid_ratio_{variant}"] = f["domain_fid"] / max(s["domain_fid"], 1e-12)
    for sampler, by_variant in scores.items():
        gain = by_variant["lora"]["class_agreement"] - by_variant["base"]["class_agreement"]
        out[f"lora_agreement_gain_{sampler}"] = gain
    return out
