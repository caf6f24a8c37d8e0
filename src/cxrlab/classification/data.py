"""PneumoniaMNIST: loading the MedMNIST npz with every key and shape checked."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrlab.core.errors import DataError

SPLITS = ("train", "val", "test")
CLASS_NAMES = ("normal", "pneumonia")


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (N, H, W) and ``labels`` int64 (N,) in {0, 1}."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def first_per_class(self, per_class: int) -> Split:
        """The first ``per_class`` images of each class (all of a class that has fewer)."""
        keep = np.concatenate([np.flatnonzero(self.labels == c)[:per_class] for c in (0, 1)])
        return Split(self.images[keep], self.labels[keep])


def load_pneumoniamnist(path: str | Path) -> dict[str, Split]:
    """Load and validate a PneumoniaMNIST npz file.

    Args:
        path: An npz with ``{train,val,test}_images`` uint8 (N, H, W) and
            ``{train,val,test}_labels`` (N, 1) or (N,) holding 0 (normal) or 1
            (pneumonia), as MedMNIST ships it.

    Returns:
        The three splits by name.

    Raises:
        DataError: If the file is missing, unreadable, or has a missing key, a
            wrong shape or dtype, or a label outside {0, 1}.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: run the fetch_data stage first (dvc repro).")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(
            f"{path} is not a readable npz file (corrupt or truncated?): {exc}."
        ) from exc

    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks the keys {', '.join(missing)}; expected {', '.join(expected)}."
        )
    return {split: _check_split(path, split, arrays) for split in SPLITS}


def _check_split(path: Path, split: str, arrays: dict[str, np.ndarray]) -> Split:
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{path}: '{split}_images' must be uint8 of shape (N, H, W), "
            f"got {images.dtype} {images.shape}."
        )
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{path}: '{split}_labels' must have shape ({len(images)}, 1) to match "
            f"'{split}_images', got {labels.shape}."
        )
    if len(images) == 0:
        raise DataError(f"{path}: split '{split}' is empty.")
    bad = np.setdiff1d(np.unique(labels), [0, 1])
    if bad.size:
        raise DataError(f"{path}: '{split}_labels' must be 0 or 1, found {bad.tolist()}.")
    return Split(images=np.ascontiguousarray(images), labels=labels.astype(np.int64))
