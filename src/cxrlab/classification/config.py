"""``classifier`` in params.yaml: the classification configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cxrlab.core.augment import AugmentConfig
from cxrlab.core.config import OptimConfig, check_positive


@dataclass(frozen=True)
class ClassifierConfig:
    """How to build the classifier.

    Attributes:
        arch: A torchvision ResNet name (``resnet18`` or ``resnet34``).
        num_classes: Output logits.
        in_channels: Input channels (1 for grayscale X-rays).
        stem: ``small`` replaces the 7x7 stride-2 stem by a 3x3 stride-1 conv (keeping
            the max-pool), for 28-64 px inputs; ``imagenet`` keeps torchvision's stem,
            for 224 px.
        width: Channels of the first stage (64 in the standard ResNet); the later
            stages double it as usual. Smaller is faster on a CPU.
        dropout: Dropout before the final linear layer.
    """

    arch: str = "resnet18"
    num_classes: int = 2
    in_channels: int = 1
    stem: Literal["small", "imagenet"] = "small"
    width: int = 64
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for the classifier.

    Attributes:
        seed: Seeds initialisation, shuffling, augmentation and dropout.
        image_size: Side the 28 px images are resized to (28 keeps them as they are).
        epochs: Passes over the training split.
        batch_size: Images per step.
        optim: Optimizer and LR schedule (``core.config.OptimConfig``).
        label_smoothing: Cross-entropy label smoothing.
        class_weighting: ``balanced`` weights the loss by inverse class frequency.
        select_metric: Validation metric that picks the best epoch.
        channels_last: Use the channels-last memory format (faster on CPU).
        augment: Random transforms applied to training batches.
    """

    seed: int = 0
    image_size: int = 28
    epochs: int = 10
    batch_size: int = 128
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=1e-4, warmup_frac=0.2)
    )
    label_smoothing: float = 0.0
    class_weighting: Literal["none", "balanced"] = "balanced"
    select_metric: Literal["auc", "loss", "balanced_accuracy"] = "auc"
    channels_last: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        check_positive(self, "classifier.train", "epochs", "batch_size", "optim.lr")


@dataclass(frozen=True)
class ClassifierFigures:
    """``classifier.paths.figures``: the file each figure of the part is written to."""

    training_curves: str
    gradcam: str
    failures: str
    retrieval: str


@dataclass(frozen=True)
class ClassifierPaths:
    """``classifier.paths``: files shared by the classifier stages and dvc.yaml."""

    data: str
    model: str
    checkpoint: str
    train_live: str
    eval_live: str
    retrieval_live: str
    figures: ClassifierFigures


@dataclass(frozen=True)
class ClassifierEval:
    """``classifier.eval``: thresholding and figures."""

    threshold_method: Literal["youden", "f1", "accuracy"] = "youden"
    gradcam_per_group: int = 6
    failures: int = 24


@dataclass(frozen=True)
class ClassifierRetrieval:
    """``classifier.retrieval``: precision@k cut-offs and the gallery's size."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    gallery_queries: int = 8
    gallery_neighbours: int = 5


@dataclass(frozen=True)
class ClassifierParams:
    """``classifier``: the PneumoniaMNIST classifier's stages."""

    paths: ClassifierPaths
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: ClassifierEval = field(default_factory=ClassifierEval)
    retrieval: ClassifierRetrieval = field(default_factory=ClassifierRetrieval)
