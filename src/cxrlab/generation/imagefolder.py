"""Hugging Face imagefolder datasets: PNG files plus ``metadata.jsonl`` (file_name, text).

This is the layout diffusers' text-to-image LoRA training reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxrlab.core.errors import DataError
from cxrlab.core.utils import atomic_path

METADATA_FILE = "metadata.jsonl"


def write_imagefolder(
    directory: str | Path, images: Sequence[np.ndarray], texts: Sequence[str], names: Sequence[str]
) -> Path:
    """Write images as PNG with one metadata row each, atomically.

    Args:
        directory: The folder to (re)create.
        images: uint8 grayscale images.
        texts: The caption of each image.
        names: File stem of each image (unique).

    Returns:
        The folder written.
    """
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        with (tmp / METADATA_FILE).open("w") as meta:
            for image, text, name in zip(images, texts, names, strict=True):
                file_name = f"{name}.png"
                Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp / file_name)
                meta.write(json.dumps({"file_name": file_name, "text": text}) + "\n")
    return Path(directory)


def read_imagefolder(directory: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an imagefolder written by :func:`write_imagefolder` (or by hand).

    Args:
        directory: Holds ``metadata.jsonl`` with one ``{"file_name", "text"}`` row per
            image, and the images it names (all of one size; read as grayscale).

    Returns:
        uint8 images (N, H, W) and their captions.

    Raises:
        DataError: If the folder or its metadata is missing or empty, a row is not
            JSON or lacks ``file_name`` or ``text``, or an image is missing, unreadable
            or of another size than the first.
    """
    directory = Path(directory)
    meta = directory / METADATA_FILE
    if not meta.is_file():
        raise DataError(f"{meta} not found: run the export_clip_subset stage first.")
    images, texts = [], []
    for number, line in enumerate(meta.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta} line {number} is not JSON ({exc}).") from exc
        missing = [k for k in ("file_name", "text") if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(f"{meta} line {number} has no '{missing[0]}' field.")
        path = directory / row["file_name"]
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("L")))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} (line {number} of {meta}) is missing or unreadable.") from exc
        if images[-1].shape != images[0].shape:
            raise DataError(
                f"{path} is {images[-1].shape}, but the subset's images are {images[0].shape}."
            )
        texts.append(str(row["text"]))
    if not images:
        raise DataError(f"{meta} lists no images: the subset is empty.")
    return np.stack(images), texts
