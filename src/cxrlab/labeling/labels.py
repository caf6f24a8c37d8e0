"""The auto-label table ``labeled_dataset.csv``: one row per image of every split."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.utils import atomic_path

COLUMNS = ("image_id", "split", "auto_label", "ground_truth", "confidence_score")


def image_id(split: str, index: int) -> str:
    """The stable id of image ``index`` of ``split`` in the PneumoniaMNIST npz."""
    return f"{split}-{index:05d}"


def parse_image_id(value: str) -> tuple[str, int]:
    """Invert :func:`image_id`."""
    split, _, index = value.rpartition("-")
    if not split or not index.isdigit():
        raise DataError(f"'{value}' is not an image id of the form <split>-<index>.")
    return split, int(index)


def write_labels(
    path: str | Path,
    labels: dict[str, np.ndarray],
    prob: dict[str, np.ndarray],
    threshold: float,
    class_names: Sequence[str],
) -> int:
    """Write the table atomically; returns the number of rows.

    Args:
        path: The CSV to write.
        labels: Ground truth (0/1) per split.
        prob: Probability of class 1 per split.
        threshold: ``prob >= threshold`` gives class 1.
        class_names: Names of class 0 and class 1, written as labels.
    """
    rows = 0
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for split, y in labels.items():
            pred = (prob[split] >= threshold).astype(int)
            confidence = np.where(pred == 1, prob[split], 1 - prob[split])
            for i, (p, t, c) in enumerate(zip(pred, y, confidence, strict=True)):
                writer.writerow(
                    [image_id(split, i), split, class_names[p], class_names[t], f"{c:.6f}"]
                )
                rows += 1
    return rows


def read_labels(path: str | Path) -> list[dict[str, str | float]]:
    """Read the table back, checking its columns.

    Raises:
        DataError: If the file is missing or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: run the clip_label stage first (dvc repro).")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path} lacks the columns {', '.join(missing)}; expected {', '.join(COLUMNS)}."
            )
        return [{**row, "confidence_score": float(row["confidence_score"])} for row in reader]


def select_balanced(
    rows: list[dict],
    split: str,
    per_class: int,
    class_names: Sequence[str],
    source: str = "ground_truth",
    min_confidence: float = 0.0,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """Pick ``per_class`` images of each class from one split, at random but seeded.

    Args:
        rows: The label table (see :func:`read_labels`).
        split: The split to draw from.
        per_class: Images per class.
        class_names: The classes, each of which must get ``per_class`` images.
        source: ``ground_truth`` uses the true labels; ``auto`` the auto labels with
            ``confidence_score >= min_confidence``.
        min_confidence: The confidence floor for ``auto``.
        seed: Seeds the draw.

    Returns:
        ``(index in split, class name)`` pairs, class by class, each sorted by index.

    Raises:
        DataError: If a class has fewer eligible images than ``per_class``.
        ConfigError: On an unknown ``source`` or a non-positive ``per_class``.
    """
    if source not in ("ground_truth", "auto"):
        raise ConfigError(f"unknown label source '{source}'; expected 'ground_truth' or 'auto'.")
    if per_class <= 0:
        raise ConfigError(f"clip.subset.per_class must be positive, got {per_class}.")
    column = "ground_truth" if source == "ground_truth" else "auto_label"
    rng = np.random.default_rng(seed)
    picked = []
    for name in class_names:
        eligible = [
            parse_image_id(r["image_id"])[1]
            for r in rows
            if r["split"] == split
            and r[column] == name
            and (source == "ground_truth" or r["confidence_score"] >= min_confidence)
        ]
        if len(eligible) < per_class:
            floor = f" with confidence >= {min_confidence}" if source == "auto" else ""
            raise DataError(
                f"only {len(eligible)} {split} images are labelled '{name}' by {column}{floor}; "
                f"{per_class} were asked for (clip.subset.per_class)."
            )
        chosen = sorted(rng.choice(eligible, size=per_class, replace=False).tolist())
        picked += [(i, name) for i in chosen]
    return picked
