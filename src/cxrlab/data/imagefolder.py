"""Hugging Face imagefolder datasets: PNG files plus ``metadata.jsonl`` (file_name, text).

This is the layout diffusers' text-to-image LoRA training reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxrlab.utils import atomic_path

METADATA_FILE = "metadata.jsonl"


def write_imagefolder(directory: str | Path, images: Sequence[np.ndarray], texts: Sequence[str], names: Sequence[str]) -> Path:
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
