"""``clip`` in params.yaml: the labeling configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cxrlab.core.augment import AugmentConfig
from cxrlab.core.config import OptimConfig, check_positive


@dataclass(frozen=True)
class ClipArchConfig:
    """A CLIP to build from scratch, in open_clip's own config terms.

    Attributes:
        embed_dim: Width of the shared image-text embedding.
        vision: open_clip ``vision_cfg``: an int ``layers`` gives a ViT, a list of four a
            ModifiedResNet (whose ``image_size`` must be a multiple of 32).
        text: open_clip ``text_cfg`` (its default tokenizer is open_clip's BPE).
        mean: Per-channel normalisation mean (3 channels; grayscale is repeated).
        std: Per-channel normalisation std.
    """

    embed_dim: int = 128
    vision: dict[str, Any] = field(
        default_factory=lambda: {
            "image_size": 64,
            "layers": [1, 1, 1, 1],
            "width": 32,
            "head_width": 32,
        }
    )
    text: dict[str, Any] = field(
        default_factory=lambda: {"context_length": 32, "width": 128, "heads": 4, "layers": 2}
    )
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def open_clip_config(self) -> dict[str, Any]:
        """The ``open_clip_config.json`` content for this architecture."""
        return {
            "model_cfg": {
                "embed_dim": self.embed_dim,
                "vision_cfg": self.vision,
                "text_cfg": self.text,
            },
            "preprocess_cfg": {
                "mean": list(self.mean),
                "std": list(self.std),
                "interpolation": "bilinear",
                "resize_mode": "squash",
            },
        }


@dataclass(frozen=True)
class ClipTrainConfig:
    """Optimisation settings for the contrastive CLIP training.

    Attributes:
        seed: Seeds shuffling, caption sampling and augmentation.
        epochs: Passes over the training images.
        batch_size: Image-caption pairs per step.
        optim: Optimizer and LR schedule (``core.config.OptimConfig``; AdamW one-cycle).
        captions: Caption templates per class name, used for training only.
        augment: Random transforms of training images.
    """

    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(weight_decay=0.05))
    captions: dict[str, list[str]] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        check_positive(self, "clip.train", "epochs", "batch_size", "optim.lr")


@dataclass(frozen=True)
class ClipFigures:
    """``clip.paths.figures``: the file each figure of the part is written to."""

    confusion: str


@dataclass(frozen=True)
class ClipPaths:
    """``clip.paths``: files shared by the CLIP stages and dvc.yaml."""

    data: str
    model: str
    checkpoint: str
    labels: str
    subset: str
    train_live: str
    label_live: str
    figures: ClipFigures


@dataclass(frozen=True)
class ClipLabel:
    """``clip.label``: prompt ensembles and calibration (on val only)."""

    prompts: dict[str, list[str]] = field(default_factory=dict)
    calibrate: bool = True
    threshold_method: Literal["youden", "f1", "accuracy"] = "youden"
    ece_bins: int = 15


@dataclass(frozen=True)
class ClipSubset:
    """``clip.subset``: the balanced imagefolder export for the diffusion LoRA."""

    split: Literal["train", "val", "test"] = "train"
    per_class: int = 100
    label_source: Literal["ground_truth", "auto"] = "ground_truth"
    min_confidence: float = 0.9
    seed: int = 0
    text: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipParams:
    """``clip``: CLIP training, auto-labelling and the balanced subset export."""

    paths: ClipPaths
    model_id: str
    arch: ClipArchConfig = field(default_factory=ClipArchConfig)
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    label: ClipLabel = field(default_factory=ClipLabel)
    subset: ClipSubset = field(default_factory=ClipSubset)
