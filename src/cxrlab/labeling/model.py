"""CLIP models through open_clip: built from a config (cpu profile) or loaded by id (gpu).

Both profiles end in the same place: a folder in open_clip's ``local-dir:`` layout
(``open_clip_config.json`` + ``open_clip_model.safetensors``) or a hub id such as
``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``, loaded by
:func:`load_clip` with ``open_clip.create_model_and_transforms``.

Two builders: :func:`build_clip`, a small CLIP from scratch, and :func:`build_lit`, a
timm image tower and a Hugging Face BERT text tower from pretrained weights, BiomedCLIP's
shape. A folder of the latter also holds the text tower's ``config.json`` and tokenizer
files, as open_clip's ``local-dir:`` tokenizer expects.
"""

from __future__ import annotations

import functools
import json
import shutil
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
from cxrlab.labeling.config import ClipArchConfig, LitConfig

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
# The text tower's files a local-dir folder carries: its config and its tokenizer.
TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
              "special_tokens_map.json")  # fmt: skip
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the text tower's published name
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class ClipBundle:
    """A CLIP with the image preprocessing and tokenizer that belong to it."""

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    config: dict | None = None  # the open_clip_config.json it saves with (built bundles)
    text_dir: Path | None = None  # where a Hugging Face text tower's files are (LiT)

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
    return ClipBundle(model, preprocess, tokenizer, arch.open_clip_config())


def build_lit(cfg: LitConfig, text_dir: str | Path) -> ClipBundle:
    """A LiT-style CLIP: the pretrained timm image tower and the BERT in ``text_dir``.

    Both towers get a new linear head to ``cfg.embed_dim``. The text transformer is locked
    (its head trains); the image tower is locked but for its last ``cfg.unlocked_groups``
    layer groups, and all its batch norms are frozen (statistics and affine).

    Raises:
        DataError: If ``cfg.image_weights`` does not hold ``cfg.image_arch`` weights, or
            ``text_dir`` lacks the text tower's files.
    """
    import open_clip
    from timm.layers import freeze_batch_norm_2d

    from cxrlab.core.pretrained import timm_state

    text_dir = Path(text_dir)
    needed = ("model.safetensors", *TEXT_FILES)
    missing = [name for name in needed if not (text_dir / name).is_file()]
    if missing:
        raise DataError(f"{text_dir} is not a text tower folder: {', '.join(missing)} missing.")
    model_cfg = {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {"timm_model_name": cfg.image_arch, "timm_model_pretrained": False,
                       "timm_pool": "avg", "timm_proj": "linear", "image_size": cfg.image_size},
        "text_cfg": {"hf_model_name": MINILM_ID, "hf_tokenizer_name": MINILM_ID,
                     "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler",
                     "context_length": cfg.context_length},
    }  # fmt: skip
    text_cfg = {**model_cfg["text_cfg"], "hf_model_name": str(text_dir)}  # built from here
    model = open_clip.model.CustomTextCLIP(
        **{**model_cfg, "text_cfg": {**text_cfg, "hf_model_pretrained": True}}
    )
    if cfg.image_weights is not None:
        trunk = model.visual.trunk
        state = timm_state(cfg.image_arch, cfg.image_weights)
        trunk.load_state_dict({k: v for k, v in state.items() if k in trunk.state_dict()})
    model.lock_image_tower(unlocked_groups=cfg.unlocked_groups)
    # timm's freeze, not open_clip's freeze_bn_stats: open_clip swaps timm's BatchNormAct2d
    # for a plain FrozenBatchNorm2d and so drops the activation fused into it.
    model.visual.trunk = freeze_batch_norm_2d(model.visual.trunk)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    preprocess_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bilinear",
                      "resize_mode": "squash"}  # fmt: skip
    preprocess = open_clip.image_transform(cfg.image_size, is_train=False, **preprocess_cfg)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(text_dir), context_length=cfg.context_length)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    return ClipBundle(model, preprocess, tokenizer, config, text_dir)


def save_clip(bundle: ClipBundle, directory: str | Path) -> None:
    """Save a built CLIP in open_clip's ``local-dir:`` layout (with its text tower's files)."""
    if bundle.config is None:
        raise ConfigError("only a CLIP from build_clip or build_lit can be saved here.")
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        state = {k: v.detach().contiguous() for k, v in bundle.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(bundle.config, indent=2) + "\n")
        for name in TEXT_FILES if bundle.text_dir else ():
            shutil.copy(bundle.text_dir / name, tmp / name)


def load_clip(model_id: str) -> ClipBundle:
    """Load a CLIP by open_clip id: ``local-dir:<folder>`` or ``hf-hub:<org>/<name>``.

    A folder's Hugging Face text tower is built from the ``config.json`` beside its weights,
    whatever hub name its config records.

    Raises:
        DataError: If the folder or its config is missing, or the model cannot be loaded.
    """
    import open_clip

    overrides = {}
    if model_id.startswith("local-dir:"):
        folder = Path(model_id.removeprefix("local-dir:"))
        if not (folder / CONFIG_FILE).is_file():
            raise DataError(
                f"{folder / CONFIG_FILE} not found: "
                "train the CLIP first (dvc repro) or fix clip.model_id."
            )
        text_cfg = json.loads((folder / CONFIG_FILE).read_text())["model_cfg"]["text_cfg"]
        if "hf_model_name" in text_cfg:  # the text tower's config is in the folder too
            overrides["text_cfg"] = {**text_cfg, "hf_model_name": str(folder),
                                     "hf_model_pretrained": False}  # fmt: skip
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_id, **overrides)
        tokenizer = open_clip.get_tokenizer(model_id)
    except Exception as exc:  # noqa: BLE001 - open_clip and the hub raise many types
        raise DataError(f"could not load CLIP '{model_id}' ({type(exc).__name__}: {exc}).") from exc
    return ClipBundle(model.eval(), preprocess, tokenizer)
