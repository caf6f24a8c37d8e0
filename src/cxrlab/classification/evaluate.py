"""Binary classification metrics and threshold selection."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn import metrics as skm

ThresholdMethod = Literal["youden", "f1", "accuracy"]


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """Metrics of positive-class probabilities ``prob`` at ``threshold``.

    Args:
        y_true: 0/1 labels, shape (N,).
        prob: Positive-class probabilities, shape (N,).
        threshold: ``prob >= threshold`` predicts the positive class.

    Returns:
        accuracy, balanced_accuracy, precision, recall (sensitivity), specificity,
        f1, auc (threshold-free; NaN when only one class is present), and the
        confusion counts tn, fp, fn, tp.
    """
    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(prob) >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    specificity = tn / (tn + fp) if tn + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    has_both = len(np.unique(y_true)) == 2
    return {
        "accuracy": float((tp + tn) / len(y_true)),
        "balanced_accuracy": float((recall + specificity) / 2),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
        "recall": float(recall),
        "specificity": float(specificity),
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0,
        "auc": float(skm.roc_auc_score(y_true, prob)) if has_both else float("nan"),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def choose_threshold(y_true: np.ndarray, prob: np.ndarray, method: ThresholdMethod) -> float:
    """Pick the threshold that maximises ``method`` on (typically validation) data.

    ``youden`` maximises sensitivity + specificity - 1 (equivalently balanced
    accuracy), ``f1`` the F1 score, ``accuracy`` the accuracy. Candidates are the
    midpoints between consecutive distinct probabilities, so the chosen threshold
    does not sit exactly on a validation score.
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    values = np.unique(prob)
    candidates = np.concatenate([[0.0], (values[1:] + values[:-1]) / 2, [1.0]])
    order = np.argsort(-prob)
    sorted_true = y_true[order]
    pos, neg = sorted_true.sum(), len(y_true) - sorted_true.sum()
    # Counts of predicted positives at each candidate, via the sorted probabilities.
    sorted_prob = prob[order]
    n_pred = np.searchsorted(-sorted_prob, -candidates, side="right")
    tp = np.concatenate([[0], np.cumsum(sorted_true)])[n_pred]
    fp = n_pred - tp
    if method == "youden":
        score = tp / max(pos, 1) - fp / max(neg, 1)
    elif method == "f1":
        score = 2 * tp / np.maximum(pos + n_pred, 1)
    else:
        score = (tp + (neg - fp)) / len(y_true)
    return float(candidates[int(np.argmax(score))])


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of binary predictions.

    The confidence of each prediction is the probability of the predicted class;
    predictions are grouped in ``n_bins`` equal-width confidence bins, and the
    bin-size-weighted mean of |accuracy - mean confidence| is returned.
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    pred = (prob >= 0.5).astype(int)
    confidence = np.where(pred == 1, prob, 1 - prob)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(
                (pred[in_bin] == y_true[in_bin]).mean() - confidence[in_bin].mean()
            )
    return float(ece)
