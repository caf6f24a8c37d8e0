"""Segmentation metrics (Dice, IoU, HD95), post-processing and lung measurements.

Targets are coded masks (1 lung, 0 background, ``IGNORE``); the ignore region is
removed from both prediction and target before any metric.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from cxrlab.segmentation.data import IGNORE, read_pair


def dice_score(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image Dice of boolean predictions (N, H, W) against coded targets (N, H, W).

    Two empty masks score 1.
    """
    pred, lung = pred & (target != IGNORE), target == 1
    inter = (pred & lung).sum((-2, -1))
    total = pred.sum((-2, -1)) + lung.sum((-2, -1))
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


def iou_score(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image IoU (Jaccard) with the same conventions as :func:`dice_score`."""
    pred, lung = pred & (target != IGNORE), target == 1
    inter = (pred & lung).sum((-2, -1))
    union = (pred | lung).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, target: np.ndarray, spacing: float = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance between two masks' boundaries.

    Args:
        pred: Boolean prediction (H, W).
        target: Coded target (H, W).
        spacing: Size of a pixel (1 gives pixels).

    Returns:
        The distance, ``inf`` when exactly one mask is empty, 0 when both are.
    """
    valid = target != IGNORE
    pred, lung = pred & valid, (target == 1)
    if not pred.any() and not lung.any():
        return 0.0
    if not pred.any() or not lung.any():
        return float("inf")
    # Distance transforms of the two masks' bounding box only: the same distances as on
    # the whole image, about twice as fast at full size. (scipy's cKDTree would be faster
    # but crashes under torch.set_flush_denormal, which seed_everything turns on.)
    rows, cols = np.nonzero(pred | lung)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    sp, sl = _surface(pred[box]), _surface(lung[box])
    to_lung = ndimage.distance_transform_edt(~sl)[sp]
    to_pred = ndimage.distance_transform_edt(~sp)[sl]
    return float(np.percentile(np.concatenate([to_lung, to_pred]), 95) * spacing)


def postprocess(mask: np.ndarray, keep: int = 2, fill_holes: bool = True) -> np.ndarray:
    """Keep the ``keep`` largest connected components and fill holes (0 keeps all)."""
    out = mask.astype(bool)
    if keep > 0:
        labels, n = ndimage.label(out)
        if n > keep:
            sizes = ndimage.sum_labels(out, labels, index=np.arange(1, n + 1))
            largest = np.argsort(sizes)[::-1][:keep] + 1
            out = np.isin(labels, largest)
    if fill_holes:
        out = ndimage.binary_fill_holes(out)
    return out


def lung_measurements(mask: np.ndarray, spacing_mm: float | None = None) -> dict[str, float]:
    """Area, and height and width per lung, of a predicted lung mask.

    The two largest components are the lungs; the one whose centroid lies left in
    the image is the patient's right lung (radiological convention).

    Returns:
        ``area_px`` plus ``{right,left}_lung_{height,width}_px``, and the same in mm
        (``area_mm2``) when ``spacing_mm`` is given. Missing lungs give NaN.
    """
    mask = postprocess(mask, keep=2, fill_holes=True)
    labels, n = ndimage.label(mask)
    out: dict[str, float] = {"area_px": float(mask.sum())}
    parts = []
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels == i)
        parts.append((xs.mean(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
    parts.sort()
    sides = {"right": parts[0] if parts else None, "left": parts[1] if len(parts) > 1 else None}
    for side, part in sides.items():
        out[f"{side}_lung_height_px"] = float(part[1]) if part else float("nan")
        out[f"{side}_lung_width_px"] = float(part[2]) if part else float("nan")
    if spacing_mm:
        out["area_mm2"] = out["area_px"] * spacing_mm**2
        for key in [k for k in out if k.endswith("_px") and k != "area_px"]:
            out[key.replace("_px", "_mm")] = out[key] * spacing_mm
    return out


def score_images(
    predict: Callable[[np.ndarray], np.ndarray],
    index: pd.DataFrame,
    root: str | Path,
    keep: int = 2,
    fill_holes: bool = True,
) -> pd.DataFrame:
    """Segment every image of ``index`` at full size and score it, post-processed or not.

    Args:
        predict: Maps a raw grayscale image (H, W) to a boolean lung mask (H, W).
        index: Rows with ``image`` and ``mask`` file names (other columns are kept).
        root: Folder holding ``images/`` and ``masks/``.
        keep: Largest components kept by post-processing (0 keeps all).
        fill_holes: Whether post-processing fills holes.

    Returns:
        ``index`` plus ``dice``, ``iou``, ``hd95_px`` (post-processed) and the same
        with a ``_raw`` suffix (the thresholded network output).
    """
    root = Path(root)
    rows = []
    for row in tqdm(list(index.itertuples()), desc="scoring", leave=False):
        image, target = read_pair(root / "images" / row.image, root / "masks" / row.mask)
        raw = predict(image)
        post = postprocess(raw, keep, fill_holes)
        scores = {}
        for suffix, pred in (("", post), ("_raw", raw)):
            scores[f"dice{suffix}"] = float(dice_score(pred, target))
            scores[f"iou{suffix}"] = float(iou_score(pred, target))
            scores[f"hd95_px{suffix}"] = hd95(pred, target)
        rows.append(scores)
    return pd.concat([index.reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def age_band(age: pd.Series, edges: list[int]) -> pd.Series:
    """Label ages with bands cut at ``edges`` (``<40``, ``40-59``, ``>=60``; ``unknown``)."""
    labels = [f"<{edges[0]}"]
    labels += [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    labels.append(f">={edges[-1]}")
    bands = pd.cut(age, [-np.inf, *edges, np.inf], right=False, labels=labels)
    return bands.astype(object).where(age.notna(), "unknown")


def summarise(scores: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Mean of ``columns`` plus the image count, as a flat dict (``n`` is the count)."""
    out = {c: float(scores[c].replace(np.inf, np.nan).mean()) for c in columns}
    out["n"] = len(scores)
    return out
