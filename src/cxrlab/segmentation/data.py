"""The covid_lungseg dataset: reading, screening, patient-level splits and preparation.

Masks hold 255 = lung, 0 = background and 127 = "ignore" (a device or an unclear
area). Prepared masks encode these as 1, 0 and :data:`IGNORE`; the ignore region is
left out of the loss and of every metric.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.utils import atomic_path

log = logging.getLogger(__name__)

PREPARED_ARRAYS, PREPARED_MANIFEST = "arrays.npz", "manifest.csv"  # prepare_lungseg's files
INDEX_COLUMNS = ("image", "mask", "patientid", "sex", "age", "finding", "view", "license")
IGNORE = 2
"""Value of the ignore region in prepared masks (the raw masks use 127)."""


def read_index(root: str | Path) -> pd.DataFrame:
    """Read ``index.csv`` and check that it has the columns the stages use.

    Raises:
        DataError: If the file is missing or lacks a column.
    """
    path = Path(root) / "index.csv"
    if not path.is_file():
        raise DataError(f"{path} not found: run the fetch_data stage for covid_lungseg.")
    index = pd.read_csv(path)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}.")
    index["patientid"] = index["patientid"].astype(str)
    return index


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as 8-bit grayscale (RGB and RGBA are converted).

    Raises:
        DataError: If the file is missing or is not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found.")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}).") from exc


def encode_mask(raw: np.ndarray) -> np.ndarray:
    """Map raw mask values (255 lung, 127 ignore, else background) to 1 / IGNORE / 0."""
    out = (raw >= 192).astype(np.uint8)
    out[(raw >= 64) & (raw < 192)] = IGNORE
    return out


def read_pair(image_path: str | Path, mask_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its encoded mask.

    Raises:
        DataError: If either is unreadable or their sizes differ.
    """
    image, mask = read_gray(image_path), read_gray(mask_path)
    if image.shape != mask.shape:
        raise DataError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{image_path} is {image.shape[1]}x{image.shape[0]}; they must match."
        )
    return image, encode_mask(mask)


def screen(index: pd.DataFrame, root: str | Path, min_lung_frac: float) -> pd.DataFrame:
    """Check every pair; return ``index`` with ``status`` (``kept``/``dropped``) and ``reason``.

    Pairs whose sizes differ and near-empty masks are dropped, each with a logged
    warning naming the file. An unreadable file stops the stage.
    """
    root = Path(root)
    status, reasons = [], []
    for row in index.itertuples():
        try:
            _, mask = read_pair(root / "images" / row.image, root / "masks" / row.mask)
        except DataError as exc:
            if "must match" not in str(exc):
                raise
            status.append("dropped")
            reasons.append("mask and image sizes differ")
            log.warning("dropping %s: %s", row.image, exc)
            continue
        lung = float((mask == 1).mean())
        if lung < min_lung_frac:
            status.append("dropped")
            reasons.append(f"near-empty mask ({lung:.1%} lung < {min_lung_frac:.1%})")
            log.warning("dropping %s: its mask is %.1f%% lung", row.image, 100 * lung)
            continue
        status.append("kept")
        reasons.append("")
    return index.assign(status=status, reason=reasons)


def split_by_patient(
    patients: pd.Series,
    fractions: dict[str, float],
    seed: int,
    key: str = "segmentation.prepare.fractions",
) -> pd.Series:
    """Assign each image a split so that every patient's images share one split.

    Patients are shuffled with ``seed`` and each goes to the split furthest below its
    target share of images.

    Raises:
        ConfigError: If the fractions (param ``key``) are not positive or do not sum to 1.
    """
    if not fractions or any(f <= 0 for f in fractions.values()):
        raise ConfigError(f"{key} must be positive shares, e.g. 0.7.")
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise ConfigError(f"{key} sum to {sum(fractions.values()):.3f}, not 1.")
    counts = patients.value_counts()
    order = np.random.default_rng(seed).permutation(sorted(counts.index))
    assigned, filled = {}, dict.fromkeys(fractions, 0)
    for patient in order:
        name = min(fractions, key=lambda s: filled[s] / len(patients) - fractions[s])
        assigned[patient] = name
        filled[name] += counts[patient]
    return patients.map(assigned)


def normalize_xray(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Stretch an 8-bit image's ``low``..``high`` percentiles to 0..255.

    The sources differ widely in exposure and windowing; this puts them on one scale,
    at training and at inference alike.
    """
    lo, hi = np.percentile(image, [low, high])
    scaled = (image.astype(np.float32) - lo) / max(hi - lo, 1.0)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,  # images
    "nearest": Image.Resampling.NEAREST,  # masks: no new label values
    "box": Image.Resampling.BOX,  # large shrinks: each pixel the mean of its area
}


def resize(array: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """Resize an 8-bit array to ``size`` x ``size`` with a ``RESAMPLING`` method."""
    return np.array(Image.fromarray(array).resize((size, size), RESAMPLING[method]))


def prepare_arrays(
    index: pd.DataFrame, root: str | Path, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read, normalise and resize the kept pairs into (N, S, S) uint8 images and masks."""
    root = Path(root)
    images, masks = [], []
    for row in index.itertuples():
        image, mask = read_pair(root / "images" / row.image, root / "masks" / row.mask)
        images.append(resize(normalize_xray(image), image_size))
        masks.append(resize(mask, image_size, "nearest"))
    return np.stack(images), np.stack(masks)


def save_prepared(
    directory: str | Path, images: np.ndarray, masks: np.ndarray, manifest: pd.DataFrame
) -> None:
    """Write the prepare_lungseg output folder, atomically.

    It holds the kept images and masks, in the order of the manifest's kept rows, and the
    manifest of every screened image with its status, reason and split.
    """
    names = manifest.loc[manifest.status == "kept", "image"].to_numpy(str)
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        np.savez_compressed(tmp / PREPARED_ARRAYS, images=images, masks=masks, image=names)
        manifest.to_csv(tmp / PREPARED_MANIFEST, index=False)


def read_manifest(directory: str | Path) -> pd.DataFrame:
    """The prepare_lungseg manifest: every screened image, its status, reason and split."""
    path = Path(directory) / PREPARED_MANIFEST
    if not path.is_file():
        raise DataError(f"{path} not found: run the prepare_lungseg stage first.")
    return pd.read_csv(path)


def load_prepared(directory: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the prepare_lungseg output as ``{split: (images, masks)}``.

    Raises:
        DataError: If the arrays or the manifest are missing or disagree.
    """
    directory = Path(directory)
    arrays, manifest = directory / PREPARED_ARRAYS, directory / PREPARED_MANIFEST
    for path in (arrays, manifest):
        if not path.is_file():
            raise DataError(f"{path} not found: run the prepare_lungseg stage first.")
    with np.load(arrays) as data:
        images, masks, names = data["images"], data["masks"], data["image"]
    index = pd.read_csv(manifest).set_index("image")
    try:
        split = index.loc[names, "split"].to_numpy()
    except KeyError as exc:
        raise DataError(f"{arrays} holds images that {manifest} does not list ({exc}).") from exc
    return {s: (images[split == s], masks[split == s]) for s in pd.unique(split)}
