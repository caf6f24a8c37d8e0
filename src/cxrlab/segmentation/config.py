"""``segmentation`` in params.yaml: the segmentation configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxrlab.core.augment import AugmentConfig
from cxrlab.core.config import OptimConfig, check_positive
from cxrlab.core.errors import ConfigError

# A depth-5 U-Net (the deepest encoder_depth) halves its input five times, so input sides
# must divide by 32; that serves shallower ones too, whose strides divide 32.
UNET_STRIDE = 32


@dataclass(frozen=True)
class PrepareConfig:
    """How images are screened, split and resized.

    Attributes:
        image_size: Side of the square network input (images are resized, not cropped).
        min_lung_frac: Masks with a smaller lung fraction are dropped as near-empty.
        fractions: Share of images per split; patients are assigned whole.
        seed: Seeds the patient shuffle.
    """

    image_size: int = 256
    min_lung_frac: float = 0.05
    fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2}
    )
    seed: int = 0


@dataclass(frozen=True)
class SegmenterConfig:
    """How to build the segmenter.

    Attributes:
        arch: An smp architecture name (``Unet``, ``UnetPlusPlus``, ``FPN``, ...).
        encoder: An smp encoder name (``resnet18``, ``resnet34``, ``tu-<timm name>`` ...).
        encoder_weights: ``null`` for random init (cpu profile), ``imagenet`` (gpu
            profile; downloaded from the hub on first use), or a weight file of the whole
            timm network behind a ``tu-`` encoder, e.g. the fetched EfficientNet-Lite0
            (``data/raw/efficientnet_lite0/efficientnet-lite0-57934424.pth``).
        encoder_depth: Encoder stages (3-5); fewer is faster and sees less context.
        decoder_channels: Decoder widths, one per encoder stage.
        in_channels: Input channels (1 for X-rays).
    """

    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    encoder_depth: int = 5
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 16])
    in_channels: int = 1


def names_weight_file(encoder_weights: str | None) -> bool:
    """Whether ``encoder_weights`` names a weight file, not weights smp fetches by name.

    A file (such as the fetched EfficientNet-Lite0) has a folder in its path or ends in
    ``.pth``/``.pt``; smp's names (``imagenet``, ``ssl``, ...) have neither. The loader in
    ``segmentation.model`` reads such a file itself; ``cxrlab.hub`` lists no repository for it.
    """
    return bool(encoder_weights) and (
        "/" in encoder_weights or encoder_weights.endswith((".pth", ".pt"))
    )


@dataclass(frozen=True)
class SegTrainConfig:
    """Optimisation settings for the segmenter.

    Attributes:
        seed: Seeds initialisation, shuffling and augmentation.
        epochs: Passes over the training split.
        batch_size: Images per step.
        optim: Optimizer and LR schedule (``core.config.OptimConfig``).
        dice_weight: Weight of the soft Dice loss.
        bce_weight: Weight of the binary cross-entropy.
        channels_last: Use the channels-last memory format (faster on CPU).
        augment: Random geometric and intensity transforms.
        patience: Stop after this many epochs without a better val Dice (None: never);
            the LR schedule still spans ``epochs``.
    """

    seed: int = 0
    epochs: int = 30
    batch_size: int = 8
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-3, weight_decay=1e-4))
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    channels_last: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    patience: int | None = None

    def __post_init__(self) -> None:
        check_positive(self, "segmentation.train", "epochs", "batch_size", "optim.lr")
        if self.patience is not None:
            check_positive(self, "segmentation.train", "patience")


@dataclass(frozen=True)
class SegmentationFigures:
    """``segmentation.paths.figures``: the file each figure of the part is written to."""

    training_curves: str
    overlays: str
    dice_by_group: str
    dice_distribution: str
    nih_overlays: str


@dataclass(frozen=True)
class SegmentationPaths:
    """``segmentation.paths``: files shared by the segmentation stages and dvc.yaml."""

    raw: str
    nih: str
    prepared: str
    model: str
    checkpoint: str
    prepare_live: str
    train_live: str
    eval_live: str
    per_image: str
    nih_measurements: str
    figures: SegmentationFigures


@dataclass(frozen=True)
class Postprocess:
    """``segmentation.eval.postprocess``: clean-up of predicted masks."""

    keep: int = 2
    fill_holes: bool = True


@dataclass(frozen=True)
class SegmentationEval:
    """``segmentation.eval``: how full-size masks are predicted, subgroups and figures.

    Attributes:
        threshold: The lung probability at or below which a pixel is background.
        input_sizes: Input sides the image is segmented at; their full-size lung
            probabilities are averaged before thresholding. None: the training side alone.
        postprocess: Clean-up of the thresholded mask.
        age_bands: Edges of the test split's age bands.
        overlay_cases: Best, median and worst test cases shown, this many each.
    """

    threshold: float = 0.5
    input_sizes: list[int] | None = None
    postprocess: Postprocess = field(default_factory=Postprocess)
    age_bands: list[int] = field(default_factory=lambda: [40, 60])
    overlay_cases: int = 3

    def __post_init__(self) -> None:
        if self.input_sizes is not None and (
            not self.input_sizes or any(s <= 0 or s % UNET_STRIDE for s in self.input_sizes)
        ):
            raise ConfigError(
                f"segmentation.eval.input_sizes {self.input_sizes}: give positive multiples "
                f"of {UNET_STRIDE} (the U-Net's stride), or null for the training size."
            )


@dataclass(frozen=True)
class SegmentationParams:
    """``segmentation``: lung segmentation on covid_lungseg."""

    paths: SegmentationPaths
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    eval: SegmentationEval = field(default_factory=SegmentationEval)
