"""CLIP models through open_clip: built from a config (cpu profile) or loaded by id (gpu).

Both profiles end in the same place: a folder in open_clip's ``local-dir:`` layout
(``open_clip_config.json`` + ``open_clip_model.safetensors``) or a hub id such as
``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``, loaded by
:func:`load_clip` with ``open_clip.create_model_and_transforms``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.runtime import device_of, run_batched
from cxrlab.core.utils import atomic_path
from cxrlab.labeling.config import ClipArchConfig

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


@dataclass
class ClipBundle:
    """A CLIP with the image preprocessing and tokenizer that belong to it."""

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any

    def images_to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """Preprocess uint8 grayscale images (N, H, W) into the model's input batch."""
        return torch.stack([self.preprocess(Image.fromarray(im).convert("RGB")) for im in images])

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised image embeddings of preprocessed images."""
        self.model.eval()
        encode = functools.partial(self.model.encode_image, normalize=True)
        return run_batched(encode, x, batch_size, device_of(self.model))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings."""
        self.model.eval()
        tokens = self.tokenizer(texts).to(device_of(self.model))
        return self.model.encode_text(tokens, normalize=True).cpu()


def build_clip(arch: ClipArchConfig) -> ClipBundle:
    """Build a randomly initialised open_clip CLIP from ``arch``."""
    import open_clip

    cfg = arch.open_clip_config()
    try:
        model = open_clip.model.CLIP(**cfg["model_cfg"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"clip.arch does not describe an open_clip CLIP: {exc}.") from exc
    preprocess = open_clip.image_transform(
        arch.vision["image_size"],
        is_train=False,
        mean=arch.mean,
        std=arch.std,
        interpolation="bilinear",
        resize_mode="squash",
    )
    tokenizer = open_clip.tokenizer.SimpleTokenizer(
        context_length=arch.text.get("context_length", 77)
    )
    return ClipBundle(model, preprocess, tokenizer)


def save_clip(bundle: ClipBundle, arch: ClipArchConfig, directory: str | Path) -> None:
    """Save a CLIP built by :func:`build_clip` in open_clip's ``local-dir:`` layout."""
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        state = {k: v.detach().contiguous() for k, v in bundle.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(arch.open_clip_config(), indent=2) + "\n")


def load_clip(model_id: str) -> ClipBundle:
    """Load a CLIP by open_clip id: ``local-dir:<folder>`` or ``hf-hub:<org>/<name>``.

    Raises:
        DataError: If the folder or its config is missing, or the model cannot be loaded.
    """
    import open_clip

    if model_id.startswith("local-dir:"):
        folder = Path(model_id.removeprefix("local-dir:"))
        if not (folder / CONFIG_FILE).is_file():
            raise DataError(
                f"{folder / CONFIG_FILE} not found: "
                "train the CLIP first (dvc repro) or fix clip.model_id."
            )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_id)
        tokenizer = open_clip.get_tokenizer(model_id)
    except Exception as exc:  # noqa: BLE001 - open_clip and the hub raise many types
        raise DataError(f"could not load CLIP '{model_id}' ({type(exc).__name__}: {exc}).") from exc
    return ClipBundle(model.eval(), preprocess, tokenizer)
