"""``captioning`` in params.yaml: the captioning configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cxrlab.core.augment import AugmentConfig
from cxrlab.core.config import OptimConfig, check_positive
from cxrlab.core.errors import ConfigError

FAMILIES = ("blip", "llava")


@dataclass(frozen=True)
class VisionConfig:
    """The image encoder built from config: a ViT, or a pretrained CNN (llava family).

    Attributes:
        arch: ``vit`` (sizes below, random init), or a timm CNN name such as
            ``tf_efficientnet_lite0``: its last feature map, one token per cell, is the
            LLaVA's image (``weights``: its pretrained file; frozen under LoRA).
        weights: The CNN's weight file (``core.pretrained.timm_encoder``); null: random.
        hidden_size, num_layers, num_heads, intermediate_size: The ViT's sizes.
        patch_size: The ViT's patch side (a CNN's is its stride, set when built).
    """

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    patch_size: int = 16
    arch: str = "vit"
    weights: str | None = None


@dataclass(frozen=True)
class TextConfig:
    """The text decoder built from config.

    Attributes:
        init: ``minilm`` (BLIP only: sizes and weights from MiniLM-L6), ``random``, or
            ``pretrained`` (llava only: the causal LM and tokenizer in ``weights``).
        weights: With ``init: pretrained``, a GGUF file (such as the fetched
            SmolLM2-135M-Instruct) or a ``save_pretrained`` folder of a LLaMA-family LM.
        hidden_size, num_layers, num_heads, intermediate_size: Sizes when random.
    """

    init: Literal["minilm", "random", "pretrained"] = "minilm"
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    weights: str | None = None


@dataclass(frozen=True)
class CaptionerConfig:
    """``captioning.model``: which captioner and how big.

    Attributes:
        family: ``blip`` or ``llava``.
        pretrained: A hub id or local path; None builds the model from this config.
        image_size: Input side in pixels (from the processor when pretrained).
        max_length: Longest training caption in tokens.
        prompt: The instruction the LLaVA family sees before the caption. Decoding's
            ``no_repeat_ngram_size`` also counts the prompt's n-grams, so keep report
            phrases (such as "chest radiograph") out of it.
        system: The system turn before the prompt, for tokenizers with a chat template.
            None leaves the template's own choice: LLaMA-3's adds no system turn, while
            SmolLM2's adds "You are a helpful AI assistant named SmolLM, trained by Hugging
            Face", 19 tokens in front of every caption. "" gives an empty system turn.
        load_in_4bit: Load a pretrained LLaVA quantised to 4 bits (nf4, double
            quantisation, bf16 compute), on the CUDA GPU.
    """

    family: str = "blip"
    pretrained: str | None = None
    image_size: int = 128
    max_length: int = 64
    prompt: str = "describe the image:"
    system: str | None = None
    load_in_4bit: bool = False
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(
                f"captioning.model.family is '{self.family}'; "
                f"expected one of {', '.join(FAMILIES)}."
            )
        if self.pretrained:  # the hub model replaces the parts below
            return
        if self.family == "blip" and (self.vision.arch != "vit" or self.text.init == "pretrained"):
            raise ConfigError(
                "a blip captioner built here has a ViT and a MiniLM or random decoder: set "
                "captioning.model.vision.arch to vit and text.init to minilm or random "
                "(profile cpu-blip does)."
            )
        if self.family == "llava" and self.text.init == "minilm":
            raise ConfigError(
                "captioning.model.text.init minilm is for the blip family; a llava takes "
                "random or pretrained (with text.weights)."
            )


@dataclass(frozen=True)
class CaptionDataConfig:
    """``captioning.prepare``: image size, note length and the patient split.

    Attributes:
        image_size: Side of the square images stored for training, pixels.
        max_note_words: Longest clinical-note sentence kept, in words.
        fractions: Share of images per split; patients never straddle splits.
        seed: Seed of the patient shuffle (and of the ``max_per_split`` draw).
        max_per_split: Keep at most this many images of each split, drawn at random: a
            quick trial run (the gpu profile's smoke test); ``None`` keeps all.
    """

    image_size: int = 128
    max_note_words: int = 30
    fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2}
    )
    seed: int = 0
    max_per_split: int | None = None


@dataclass(frozen=True)
class MapperConfig:
    """``captioning.concepts``: the n-gram mapper and how its thresholds are chosen.

    Attributes:
        max_n: Longest n-gram, in words.
        thresholds: Candidate values of the minimum ``P(cui | n-gram)``.
        min_counts: Candidate values of the minimum captions per n-gram.
        dev_fraction: Share of the fitting captions held out to choose the two.
    """

    max_n: int = 3
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.8, 0.9])
    min_counts: list[int] = field(default_factory=lambda: [2, 3, 5])
    dev_fraction: float = 0.2


@dataclass(frozen=True)
class CaptionTrainConfig:
    """``captioning.train``: the fine-tune.

    Attributes:
        finetune: ``full`` trains every weight; ``lora`` only a peft LoRA adapter.
        lora_rank, lora_alpha, lora_targets: The adapter, when ``finetune`` is lora;
            ``lora_targets`` null takes the family's modules (BLIP's query/value, LLaMA's
            q/k/v/o and MLP projections: ``DEFAULT_LORA_TARGETS``); a string is a regex.
        lora_modules_to_save: Modules trained in full next to the adapter and saved with
            it, e.g. the new ``multi_modal_projector`` of a LLaVA composed here.
        gradient_checkpointing: Recompute activations in the backward pass instead of
            keeping them (less memory, about a third more time); the gpu-llava profile's.
        epochs, batch_size: As every trainer's.
        optim: By default AdamW with a linear warm-up over ``warmup_frac`` of the steps,
            then linear decay to 0 (``core.config.OptimConfig``).
        pretrained_lr_scale: The learning rate of weights that start pretrained (the
            MiniLM decoder layers) is ``optim.lr`` times this; new weights (the ViT, the
            cross-attention, the LM head) get ``optim.lr``. Ignored with a pretrained captioner.
        augment: Random affine and intensity changes of the training images.
        align_weight: Weight of an auxiliary image-text alignment loss (0 turns it off):
            a linear head on the mean-pooled image features regresses the caption's
            MiniLM sentence embedding (cosine), which gives the randomly initialised
            vision encoder a direct signal, as BLIP's image-text contrastive loss does.
            The head is used in training only and not saved.
        select: The validation metric that picks the kept epoch: ``val_loss``
            (lowest), or ``val_bleu_4`` / ``val_cider`` (highest) of greedy captions.
        val_captions_every: Write greedy val captions (BLEU-4, CIDEr, distinct share, view
            and findings accuracy) every this many epochs and after the last; the val
            loss comes every epoch. Selecting by a caption score needs 1.
        seed: Seeds the initialisation, the batch order and the augmentation.
        precision: This trainer's precision over the top-level ``precision`` param
            (null keeps that): ``auto`` (bf16 where the device does bf16 in hardware,
            else fp32), ``fp32``, ``bf16`` or ``fp16``.
    """

    finetune: Literal["full", "lora"] = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: list[str] | str | None = None
    lora_modules_to_save: list[str] | None = None
    gradient_checkpointing: bool = False
    epochs: int = 16
    batch_size: int = 16
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(weight_decay=0.05, schedule="linear")
    )
    pretrained_lr_scale: float = 0.1
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(
            rotate_deg=5, shift=0.04, zoom=0.05, brightness=0.1, contrast=0.1
        )  # fmt: skip
    )
    align_weight: float = 0.0
    select: str = "val_loss"
    val_captions_every: int = 1
    seed: int = 0
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.finetune not in ("full", "lora"):
            raise ConfigError(
                f"captioning.train.finetune is '{self.finetune}'; expected full or lora."
            )
        if self.select not in ("val_loss", "val_bleu_4", "val_cider"):
            raise ConfigError(
                f"captioning.train.select is '{self.select}'; "
                "expected val_loss, val_bleu_4 or val_cider."
            )
        if self.select != "val_loss" and self.val_captions_every != 1:
            raise ConfigError(
                f"captioning.train.select is '{self.select}', a score of the val captions, so "
                f"captioning.train.val_captions_every must be 1, not {self.val_captions_every}."
            )
        check_positive(
            self, "captioning.train", "epochs", "batch_size", "optim.lr", "val_captions_every"
        )


@dataclass(frozen=True)
class CaptioningFigures:
    """``captioning.paths.figures``: the file each figure of the part is written to."""

    training: str
    examples: str
    scores: str


@dataclass(frozen=True)
class CaptioningPaths:
    """``captioning.paths``: inputs, models and outputs of the captioning stages."""

    roco: str
    covid: str
    nih: str
    data: str
    mapper: str
    model: str
    checkpoints: str
    predictions: str
    concepts: str
    train_live: str
    eval_live: str
    mapper_live: str
    inference_live: str
    figures: CaptioningFigures


@dataclass(frozen=True)
class DecodeParams:
    """``captioning.decode``: test inference, greedy (``num_beams`` 1) or beam search."""

    num_beams: int = 1
    max_new_tokens: int = 64
    no_repeat_ngram_size: int = 3
    batch_size: int = 8


@dataclass(frozen=True)
class CaptionEvalParams:
    """``captioning.evaluate``: what the evaluation computes and shows."""

    meteor: bool = True
    examples: int = 8


@dataclass(frozen=True)
class CaptioningParams:
    """``captioning``: caption data, the captioner, decoding, concepts and scoring."""

    paths: CaptioningPaths
    prepare: CaptionDataConfig = field(default_factory=CaptionDataConfig)
    model: CaptionerConfig = field(default_factory=CaptionerConfig)
    train: CaptionTrainConfig = field(default_factory=CaptionTrainConfig)
    decode: DecodeParams = field(default_factory=DecodeParams)
    concepts: MapperConfig = field(default_factory=MapperConfig)
    evaluate: CaptionEvalParams = field(default_factory=CaptionEvalParams)
