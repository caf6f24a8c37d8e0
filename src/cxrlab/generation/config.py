"""``diffusion`` and ``lora`` in params.yaml: the generation configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxrlab.core.config import OptimConfig, check_positive

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class VaeConfig:
    """``AutoencoderKL`` sizes; it downsamples by 2 per block after the first."""

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16


@dataclass(frozen=True)
class UnetConfig:
    """``UNet2DConditionModel`` sizes; cross-attention in every block but the last."""

    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 32


@dataclass(frozen=True)
class TextConfig:
    """CLIP text encoder sizes (vocabulary: the 49,408 tokens of CLIP's BPE)."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    max_length: int = 32


@dataclass(frozen=True)
class NoiseConfig:
    """The DDPM training schedule (Stable Diffusion's by default)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012


@dataclass(frozen=True)
class DiffusionConfig:
    """A Stable Diffusion built from scratch: image side and the parts' sizes."""

    resolution: int = 32
    vae: VaeConfig = field(default_factory=VaeConfig)
    unet: UnetConfig = field(default_factory=UnetConfig)
    text: TextConfig = field(default_factory=TextConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass(frozen=True)
class VaeTrainConfig:
    """``diffusion.vae_train``: reconstruction (MSE) plus a small KL term, as in SD."""

    seed: int = 0
    epochs: int = 8
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3))
    kl_weight: float = 1e-6

    def __post_init__(self):
        check_positive(self, "diffusion.vae_train", "epochs", "batch_size", "optim.lr")


@dataclass(frozen=True)
class BaseTrainConfig:
    """``diffusion.base_train``: the base UNet, on every training image, one prompt.

    ``uncond_prob`` of the captions are replaced by the empty prompt, so that the
    model also learns the unconditional prediction classifier-free guidance needs.
    The saved UNet is the exponential moving average of the weights (``ema_decay``).
    """

    seed: int = 0
    epochs: int = 20
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(warmup_frac=0.05))
    ema_decay: float = 0.999
    prompt: str = "a chest x-ray"
    uncond_prob: float = 0.1

    def __post_init__(self):
        check_positive(self, "diffusion.base_train", "epochs", "batch_size", "optim.lr")


@dataclass(frozen=True)
class LoraTrainConfig:
    """``lora``: the LoRA fine-tune of the base UNet on the balanced, captioned subset.

    Attributes:
        optim: AdamW's peak LR, reached after a linear warm-up over ``warmup_frac`` of
            the steps, then held (``constant``) or decayed to 0 (``cosine``, ``linear``);
            the schedule stretches with ``steps`` (``core.config.OptimConfig``).
        max_grad_norm: Gradients are clipped to this global norm (0: no clipping).
        snr_gamma: Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is usual); None
            weights every timestep equally.
        val_per_class: Real val images per class whose denoising loss (fixed noise) is
            measured every ``eval_every`` steps; the best block by it is kept.
        diverge_factor, diverge_patience: Training stops with an error when the val loss
            turns non-finite or stays above ``diverge_factor`` x its best for
            ``diverge_patience`` evaluations in a row.
        gradient_checkpointing: Recompute the UNet's activations in the backward pass:
            less memory (SD-1.5 at 512 px on a 24 GB card), about a third slower.
    """

    seed: int = 0
    steps: int = 500
    rank: int = 8
    alpha: float | None = None
    batch_size: int = 16
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, schedule="cosine", warmup_frac=0.05)
    )
    max_grad_norm: float = 1.0
    snr_gamma: float | None = None
    uncond_prob: float = 0.1
    eval_every: int = 50
    val_per_class: int = 100
    diverge_factor: float = 2.0
    diverge_patience: int = 2
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    gradient_checkpointing: bool = False

    def __post_init__(self):
        check_positive(
            self, "lora", "steps", "rank", "batch_size", "eval_every", "val_per_class",
            "diverge_factor", "diverge_patience", "optim.lr",
        )  # fmt: skip


@dataclass(frozen=True)
class LcmTrainConfig:
    """``diffusion.lcm``: latent consistency distillation of the base into an LCM-LoRA.

    ``pretrained`` (a hub id or folder holding ``pytorch_lora_weights.safetensors``)
    skips distillation and uses that LoRA instead, e.g.
    ``latent-consistency/lcm-lora-sdv1-5`` on the gpu profile.
    """

    pretrained: str | None = None
    seed: int = 0
    steps: int = 1000
    rank: int = 16
    batch_size: int = 64
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(schedule="constant", warmup_frac=0.0)
    )
    max_grad_norm: float = 0.0
    ddim_timesteps: int = 50
    teacher_guidance: float = 1.0
    huber_c: float = 0.001
    eval_every: int = 200
    target_modules: list[str] = field(
        default_factory=lambda: [*LORA_TARGETS, "proj_in", "proj_out", "conv1", "conv2"]
    )

    def __post_init__(self):
        check_positive(
            self, "diffusion.lcm", "steps", "rank", "batch_size", "eval_every",
            "ddim_timesteps", "optim.lr",
        )  # fmt: skip


@dataclass(frozen=True)
class DiffusionFigures:
    """``diffusion.paths.figures``: the file each figure of the part is written to."""

    vae_training: str
    base_training: str
    lcm_training: str
    lora_training: str
    scores: str
    lcm_grid: str
    ddim_grid: str


@dataclass(frozen=True)
class DiffusionPaths:
    """``diffusion.paths``: inputs, models and outputs of the generation stages."""

    data: str
    subset: str
    classifier: str
    vae: str
    base: str
    lcm_lora: str
    lora: str
    checkpoints: str
    generated: str
    vae_live: str
    base_live: str
    lcm_live: str
    lora_live: str
    eval_live: str
    figures: DiffusionFigures


@dataclass(frozen=True)
class SamplerParams:
    """``diffusion.generate.samplers.<name>``: denoising steps and guidance."""

    steps: int
    guidance_scale: float = 1.0


@dataclass(frozen=True)
class GenerateParams:
    """``diffusion.generate``: how many images per prompt and variant, and the samplers."""

    seed: int = 0
    per_prompt: int = 250
    batch_size: int = 125
    grid_columns: int = 10
    lora_scale: float = 1.0
    vae_slicing: bool = False  # decode one image at a time (less memory at 512 px)
    samplers: dict[str, SamplerParams] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateParams:
    """``diffusion.evaluate``: what evaluate_generation computes beside the domain scores.

    Attributes:
        inception: The FID InceptionV3 as TorchScript (fetched as ``fid_inception``) for
            the standard FID; null skips it (it takes a few minutes on a CPU).
    """

    inception: str | None = None


@dataclass(frozen=True)
class DiffusionParams:
    """``diffusion``: the Stable Diffusion base, its LCM-LoRA, generation and scoring."""

    paths: DiffusionPaths
    pretrained: str | None = None
    model: DiffusionConfig = field(default_factory=DiffusionConfig)
    vae_train: VaeTrainConfig = field(default_factory=VaeTrainConfig)
    base_train: BaseTrainConfig = field(default_factory=BaseTrainConfig)
    lcm: LcmTrainConfig = field(default_factory=LcmTrainConfig)
    generate: GenerateParams = field(default_factory=GenerateParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
