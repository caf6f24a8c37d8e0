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
        channels_last: Train in the channels-last memory format: 15-20 % faster steps on
            the AVX2 CPU (BENCHMARKS.md), different floating-point rounding.
    """

    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(weight_decay=0.05))
    captions: dict[str, list[str]] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    channels_last: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "clip.train", "epochs", "batch_size", "optim.lr")


@dataclass(frozen=True)
class LitConfig:
    """``clip.lit``: a LiT-style CLIP of two pretrained towers, zero-shot on PneumoniaMNIST.

    Its heads train only on the chest X-ray caption pairs (no PneumoniaMNIST image or
    label), so its PneumoniaMNIST labels are zero-shot. It has BiomedCLIP's shape: a timm
    image tower and a Hugging Face BERT text tower with its own tokenizer, in open_clip's
    ``CustomTextCLIP``.

    Attributes:
        embed_dim: Width of the shared embedding (both towers get a new linear head).
        image_arch: The timm image tower.
        image_weights: Its ImageNet weights, a file ``fetch_data`` brings (None: random).
        image_size: The image tower's input side (images are squashed to it).
        unlocked_groups: The image tower's last layer groups left trainable (0: only its
            head trains). The text tower (MiniLM-L6) is locked; only its head trains.
        context_length: Text tokens per caption.
        source_size: Training images are shrunk to this side first, PneumoniaMNIST's.
        train: Optimisation (``captions`` unused: each image has its own caption).
    """

    embed_dim: int = 256
    image_arch: str = "tf_efficientnet_lite0"
    image_weights: str | None = None
    image_size: int = 128
    unlocked_groups: int = 0
    context_length: int = 64
    source_size: int = 28
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)

    def __post_init__(self) -> None:
        check_positive(self, "clip.lit", "embed_dim", "image_size", "context_length",
                       "source_size")  # fmt: skip


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
    """``clip``: CLIP training, auto-labelling and the balanced subset export.

    ``recipe`` picks what ``train_clip`` trains: ``supervised``, the small CLIP of ``arch``
    on PneumoniaMNIST's train split with ``train.captions``; ``lit``, the zero-shot model
    of ``lit``.
    """

    paths: ClipPaths
    model_id: str
    recipe: Literal["supervised", "lit"] = "supervised"
    arch: ClipArchConfig = field(default_factory=ClipArchConfig)
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    lit: LitConfig = field(default_factory=LitConfig)
    label: ClipLabel = field(default_factory=ClipLabel)
    subset: ClipSubset = field(default_factory=ClipSubset)
