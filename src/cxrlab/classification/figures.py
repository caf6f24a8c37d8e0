"""Classifier figures: Grad-CAM by outcome, the failure gallery, the retrieval gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cxrlab.classification.data import CLASS_NAMES
from cxrlab.classification.gradcam import grad_cam
from cxrlab.classification.model import Classifier
from cxrlab.core.figures import BAD, GOOD, Panel, save_gallery


def outcome_groups(labels: np.ndarray, prob: np.ndarray, threshold: float, n: int) -> dict:
    """Indices of the most confident true positives and negatives, and the worst errors.

    Returns:
        ``{"true positive": idx, "true negative": idx, "false positive": idx,
        "false negative": idx}``, each at most ``n`` indices, most confident first.
    """
    pred = prob >= threshold
    confidence = np.where(pred, prob, 1 - prob)
    groups = {
        "true positive": pred & (labels == 1),
        "true negative": ~pred & (labels == 0),
        "false positive": pred & (labels == 0),
        "false negative": ~pred & (labels == 1),
    }
    out = {}
    for name, mask in groups.items():
        idx = np.flatnonzero(mask)
        out[name] = idx[np.argsort(-confidence[idx], kind="stable")][:n]
    return out


def gradcam_figure(
    model: Classifier,
    images: np.ndarray,
    x: torch.Tensor,
    labels: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    n: int,
    path: str | Path,
) -> Path:
    """Grad-CAM of the predicted class for confident hits and the worst misses."""
    groups = outcome_groups(labels, prob, threshold, n)
    rows, names = [], []
    for name, idx in groups.items():
        if len(idx) == 0:
            continue
        target = torch.as_tensor((prob[idx] >= threshold).astype(np.int64))
        cams = grad_cam(model, x[idx], target).numpy()
        rows.append(
            [
                Panel(_resize(images[i], cams.shape[-1]), f"p(pneumonia)={prob[i]:.2f}", cam)
                for i, cam in zip(idx, cams, strict=True)
            ]
        )
        names.append(name)
    title = f"Grad-CAM of the predicted class (test, threshold {threshold:.2f})"
    return save_gallery(rows, path, names, title)


def failure_gallery(
    images: np.ndarray, labels: np.ndarray, prob: np.ndarray, threshold: float, n: int, path
) -> Path:
    """The ``n`` most confident mistakes, 8 per row, captioned truth/prediction."""
    wrong = np.flatnonzero((prob >= threshold) != labels.astype(bool))
    confidence = np.abs(prob[wrong] - threshold)
    worst = wrong[np.argsort(-confidence, kind="stable")][:n]
    panels = [
        Panel(images[i], f"true {CLASS_NAMES[labels[i]]}\np(pneu)={prob[i]:.2f}", color=BAD)
        for i in worst
    ]
    rows = [panels[i : i + 8] for i in range(0, len(panels), 8)] or [[]]
    title = (
        f"Most confident test errors: {len(wrong)} of {len(labels)} at threshold {threshold:.2f}"
    )
    return save_gallery(rows, path, title=title)


def retrieval_gallery(
    query_images: np.ndarray,
    query_labels: np.ndarray,
    base_images: np.ndarray,
    base_labels: np.ndarray,
    neighbours: np.ndarray,
    similarity: np.ndarray,
    path: str | Path,
) -> Path:
    """Each row: a test query, then its nearest training images (green = same label)."""
    rows = []
    for q, (idx, sims) in enumerate(zip(neighbours, similarity, strict=True)):
        row = [Panel(query_images[q], f"query: {CLASS_NAMES[query_labels[q]]}")]
        for i, s in zip(idx, sims, strict=True):
            same = base_labels[i] == query_labels[q]
            row.append(
                Panel(
                    base_images[i],
                    f"{CLASS_NAMES[base_labels[i]]} cos={s:.2f}",
                    color=GOOD if same else BAD,
                )
            )
        rows.append(row)
    return save_gallery(rows, path, title="Test queries and their nearest training images")


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square image, so it lines up with its CAM."""
    if image.shape[-1] == size:
        return image
    idx = np.arange(size) * image.shape[-1] // size
    return image[np.ix_(idx, idx)]
