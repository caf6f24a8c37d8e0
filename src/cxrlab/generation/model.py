"""Stable Diffusion pipelines: built from configs here, or loaded by hub id or path.

The cpu profile builds every part of Stable Diffusion from a small config (an
``AutoencoderKL``, a ``UNet2DConditionModel``, a CLIP text encoder and the real CLIP
BPE tokenizer, whose merges ship inside the open_clip wheel) and trains it here.
The gpu profile loads ``stable-diffusion-v1-5`` by hub id, pinned to the revision it
first used (:func:`pin_pretrained`). Both are ``StableDiffusionPipeline`` objects, and LoRA
adapters are written in the diffusers LoRA format that ``load_lora_weights`` reads.
"""

from __future__ import annotations

import gzip
import json
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from cxrlab.core.errors import DataError
from cxrlab.core.runtime import device, inference_dtype, run_batched
from cxrlab.generation.config import (
    LORA_TARGETS,
    DiffusionConfig,
    NoiseConfig,
    TextConfig,
    UnetConfig,
    VaeConfig,
)

log = logging.getLogger(__name__)

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_RECORD = "cxrlab_lora.json"
PIN = "pretrained.json"


def build_tokenizer(max_length: int):
    """CLIP's BPE tokenizer as a ``CLIPTokenizer``, from the merges open_clip ships.

    Token ids match open_clip's (and OpenAI CLIP's) tokenizer, so a prompt means the
    same ids here as in Stable Diffusion v1.5.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        eot = "<|endoftext|>"
        return CLIPTokenizer(
            str(vocab_file), str(merges_file), model_max_length=max_length, pad_token=eot
        )


def build_text_encoder(cfg: TextConfig):
    """A randomly initialised ``CLIPTextModel`` of the given size."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=cfg.max_length,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config)


def build_vae(cfg: VaeConfig, resolution: int):
    """A randomly initialised 3-channel ``AutoencoderKL``."""
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=resolution,
    )


def build_unet(cfg: UnetConfig, sample_size: int, latent_channels: int, cross_dim: int):
    """A randomly initialised ``UNet2DConditionModel`` with cross-attention on the text."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        cross_attention_dim=cross_dim,
    )


def build_noise_scheduler(cfg: NoiseConfig):
    """The DDPM scheduler used for training, configured like Stable Diffusion's."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        clip_sample=False,
        steps_offset=1,
    )


def build_pipeline(cfg: DiffusionConfig, seed: int):
    """Build an untrained ``StableDiffusionPipeline`` from ``cfg``, seeded."""
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(seed)
    factor = 2 ** (len(cfg.vae.block_out_channels) - 1)
    if cfg.resolution % factor:
        raise DataError(f"diffusion.model.resolution must be a multiple of {factor}.")
    vae = build_vae(cfg.vae, cfg.resolution)
    unet = build_unet(
        cfg.unet, cfg.resolution // factor, cfg.vae.latent_channels, cfg.text.hidden_size
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=build_text_encoder(cfg.text),
        tokenizer=build_tokenizer(cfg.text.max_length),
        unet=unet,
        scheduler=build_noise_scheduler(cfg.noise),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def pin_pretrained(source: str, directory: str | Path) -> dict:
    """Write ``directory/pretrained.json``: the pipeline ``source`` at its exact revision.

    The gpu profile starts from a published pipeline (``diffusion.pretrained``). Copying
    its 4 GB into every workspace and DVC cache would cost disk and minutes and add
    nothing: the pin names the hub id and the commit of the snapshot that was used, so
    the stages downstream load exactly that snapshot from the model cache, and DVC
    reruns them when the pin changes. The files needed are fetched (or found, offline)
    as ``from_pretrained`` would fetch them; a local folder is pinned by its path.

    Raises:
        DataError: If ``source`` is neither a pipeline folder nor a reachable hub id.
    """
    from diffusers import StableDiffusionPipeline

    from cxrlab.core.utils import atomic_path

    pin = {"source": source, "revision": None}
    if not (Path(source) / "model_index.json").is_file():
        try:
            folder = Path(StableDiffusionPipeline.download(source, safety_checker=None))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"cannot find the Stable Diffusion pipeline '{source}' (a folder or hub id): "
                f"{exc}. Check the id, and that the model is cached (python -m cxrlab.hub check)."
            ) from exc
        pin["revision"] = folder.name  # the hub cache's snapshots/<commit>
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        (tmp / PIN).write_text(json.dumps(pin, indent=2) + "\n")
    return pin


def resolve_pin(source: str | Path) -> tuple[str, dict]:
    """``(name, from_pretrained kwargs)`` for a folder, a hub id or a pin folder."""
    pin_file = Path(source) / PIN
    if not pin_file.is_file():
        return str(source), {}
    pin = json.loads(pin_file.read_text())
    return pin["source"], {"revision": pin["revision"]} if pin["revision"] else {}


def load_pipeline(source: str | Path, dtype: torch.dtype = torch.float32):
    """Load a ``StableDiffusionPipeline`` on the CPU, in ``dtype``.

    ``source`` is a saved pipeline, a hub id, or a pin (:func:`pin_pretrained`).

    Raises:
        DataError: If ``source`` is neither a saved pipeline nor a reachable hub id.
    """
    from diffusers import StableDiffusionPipeline

    name, pinned = resolve_pin(source)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            name, safety_checker=None, requires_safety_checker=False, dtype=dtype, **pinned
        )
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot load a Stable Diffusion pipeline from '{source}': {exc}. Run the "
            "train_diffusion_base stage, or check the hub id and that the model is cached."
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_lora(unet, rank: int, alpha: float | None = None, targets=LORA_TARGETS) -> None:
    """Freeze ``unet`` and add a LoRA adapter (peft) on the modules named ``targets``.

    The default targets are the attention projections, as in diffusers' text-to-image
    LoRA training; LCM-LoRA distillation also adapts the convolutions.
    """
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha or rank,
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )
    unet.add_adapter(config)


def save_lora(unet, directory: str | Path, record: dict | None = None) -> Path:
    """Write the UNet's LoRA as diffusers does (``load_lora_weights`` reads it back).

    Keys stay in peft's ``lora_A``/``lora_B`` naming, which diffusers loads for every
    layer type; converting them to the older ``lora.down``/``lora.up`` naming covers
    attention layers only, and a LoRA that also adapts convolutions then reloads
    partly. ``record`` (the training's verdict, see :func:`check_lora_record`) is
    written beside the weights as ``cxrlab_lora.json``.
    """
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    from cxrlab.core.utils import atomic_path

    state = get_peft_model_state_dict(unet)
    with atomic_path(directory) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp,
            unet_lora_layers=state,
            weight_name=LORA_WEIGHTS,
            safe_serialization=True,
        )
        if record is not None:
            (tmp / LORA_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return Path(directory)


def check_lora_record(directory: str | Path) -> dict:
    """The training record of a LoRA that train_lora saved; refuse one that diverged.

    Raises:
        DataError: If the record is missing, or says the kept weights diverged (their val
            loss is not finite, or far above the base model's).
    """
    path = Path(directory) / LORA_RECORD
    if not path.is_file():
        raise DataError(f"{path} not found: {directory} was not saved by train_lora; rerun it.")
    record = json.loads(path.read_text())
    if record.get("diverged", True):
        raise DataError(
            f"the LoRA in {directory} diverged in training (val loss {record.get('val_loss')}, "
            f"base model {record.get('base_val_loss')}); lower lora.optim.lr and rerun train_lora."
        )
    return record


def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """Text-encoder hidden states for ``prompts``, padded to the tokenizer's length."""
    tokens = pipe.tokenizer(
        prompts,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        return pipe.text_encoder(tokens.input_ids)[0]


def to_rgb(images, resolution: int) -> torch.Tensor:
    """uint8 grayscale images (N, H, W) as (N, 3, S, S) in [-1, 1], the VAE's input."""
    from cxrlab.core.transforms import to_tensor

    return to_tensor(images, resolution).expand(-1, 3, -1, -1).contiguous()


def pixel_batch(pixels: int, budget: int) -> int:
    """Items per batch so that a batch holds at most ``budget`` pixels (1 to 256)."""
    return max(1, min(256, budget // pixels))


def vae_batch(resolution: int) -> int:
    """Images per VAE batch: at most 2**21 pixels (8 at 512 px, 256 at 32 px).

    One 512 px SD-1.5 VAE activation is about 0.1 GB an image, so a batch of 256 there
    would need tens of GB; bounded by pixels, it stays near 1 GB on any device.
    """
    return pixel_batch(resolution**2, 2**21)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """Scaled latent means of images (N, 3, S, S): what the UNet is trained on.

    The VAE runs on the ``device`` param's device, in :func:`vae_batch` batches; the
    latents come back on the CPU.
    """
    vae.eval().to(device())
    means = run_batched(lambda b: vae.encode(b).latent_dist.mean, images,
                        vae_batch(images.shape[-1]), device())  # fmt: skip
    return means * vae.config.scaling_factor


@torch.no_grad()
def reconstruct(source: str | Path, images, resolution: int):
    """uint8 grayscale images passed through the VAE of the pipeline at ``source``."""
    from diffusers import AutoencoderKL

    from cxrlab.core.transforms import to_uint8

    name, pinned = resolve_pin(source)
    vae = AutoencoderKL.from_pretrained(name, **{**pinned, "subfolder": "vae"}).eval().to(device())
    out = run_batched(lambda b: vae.decode(vae.encode(b).latent_dist.mean).sample,
                      to_rgb(images, resolution), vae_batch(resolution), device())  # fmt: skip
    return to_uint8(out.mean(1, keepdim=True))


def set_latent_scale(vae, images: torch.Tensor) -> float:
    """Set the VAE's ``scaling_factor`` to 1 / std of the latents, as SD did (0.18215)."""
    vae.register_to_config(scaling_factor=1.0)
    scale = float(1.0 / encode_latents(vae, images).std())
    vae.register_to_config(scaling_factor=scale)
    return scale


def fetch_lora(source: str, directory: str | Path) -> Path:
    """Copy a diffusers-format LoRA from a folder or a hub id into ``directory``.

    Raises:
        DataError: If the weights file cannot be found or downloaded.
    """
    import shutil

    from cxrlab.core.utils import atomic_path

    local = Path(source) / LORA_WEIGHTS
    if not local.is_file():
        try:
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(source, LORA_WEIGHTS))
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise DataError(
                f"cannot find {LORA_WEIGHTS} in '{source}' (a folder or hub id): {exc}."
            ) from exc
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        shutil.copyfile(local, tmp / LORA_WEIGHTS)
    return Path(directory)


def use_sampler(pipe, kind: str, base_config: dict) -> None:
    """Give ``pipe`` an ``LCMScheduler`` (``lcm``) or a ``DDIMScheduler`` (``ddim``)."""
    from diffusers import DDIMScheduler, LCMScheduler

    schedulers = {"lcm": LCMScheduler, "ddim": DDIMScheduler}
    if kind not in schedulers:
        raise DataError(f"unknown sampler '{kind}'; expected one of {', '.join(schedulers)}.")
    pipe.scheduler = schedulers[kind].from_config(base_config)


def variant_adapters(paths, sampler: str, variant: str, lora_scale: float) -> dict:
    """The adapters ``load_variant`` fuses for one sampler and variant.

    ``lcm`` adds the LCM-LoRA, ``lora`` the class LoRA at ``lora_scale``; ``paths`` is
    ``diffusion.paths``.
    """
    adapters = {"lcm": (paths.lcm_lora, 1.0)} if sampler == "lcm" else {}
    if variant == "lora":
        # not "lora": diffusers matches adapter names as substrings of "lora_A" keys and
        # would log every LCM-LoRA key as missing
        adapters["class"] = (paths.lora, lora_scale)
    return adapters


def load_variant(
    source: str | Path, adapters: dict[str, tuple[str | Path, float]], vae_slicing: bool = False
):
    """Load a pipeline with LoRA adapters fused into its weights, for fast sampling.

    It runs on the ``device`` param's device, in the ``precision`` param's dtype on a GPU.

    Args:
        source: The base pipeline (folder or hub id).
        adapters: ``{name: (lora folder or hub id, weight)}``; empty = the base model.
        vae_slicing: Decode the latents one image at a time (``generate.vae_slicing``).

    Returns:
        A pipeline whose UNet has the weighted LoRAs merged in and no adapter layers
        left, so sampling costs what the base model costs.
    """
    pipe = load_pipeline(source, inference_dtype())
    if adapters:
        for name, (path, _) in adapters.items():
            with _quiet_text_encoder_note():
                pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters(list(adapters), adapter_weights=[w for _, w in adapters.values()])
        pipe.fuse_lora(adapter_names=list(adapters))
        pipe.unload_lora_weights()
    if vae_slicing:
        pipe.vae.enable_slicing()  # decode one image at a time: the same images, less memory
    return pipe.to(device())


class _TextEncoderNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No LoRA keys associated to CLIPTextModel" not in record.getMessage()


@contextmanager
def _quiet_text_encoder_note():
    """Our LoRAs adapt the UNet only: drop diffusers' note that the text encoder has none."""
    loggers = [
        logging.getLogger(f"diffusers.loaders.{m}") for m in ("lora_base", "lora_pipeline", "peft")
    ]
    note = _TextEncoderNote()
    for logger in loggers:
        logger.addFilter(note)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(note)


@torch.no_grad()
def sample_images(
    pipe, prompt: str, n: int, steps: int, guidance_scale: float, seed: int, batch_size: int,
    resolution: int,
):  # fmt: skip
    """Generate ``n`` images for ``prompt`` from a fixed seed, as uint8 grayscale (n, S, S).

    The same seed gives the same starting noise, so runs with and without a LoRA
    start from the same latents and can be compared image by image.
    """
    import numpy as np

    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        images = pipe(
            prompt=[prompt] * count,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=gen,
            height=resolution,
            width=resolution,
            output_type="np",
        ).images
        out.append(np.round(images.mean(-1) * 255).astype(np.uint8))
    return np.concatenate(out)


def sample_classes(
    pipe, prompts: list[str], n: int, steps: int, guidance_scale: float, seed: int,
    batch_size: int, resolution: int,
):  # fmt: skip
    """``n`` images per class prompt, as (uint8 images, their labels).

    Prompt ``c`` (labels in prompt order) is sampled by :func:`sample_images` from seed
    ``seed + c``.
    """
    import numpy as np

    images = [
        sample_images(pipe, prompt, n, steps, guidance_scale, seed + c, batch_size, resolution)
        for c, prompt in enumerate(prompts)
    ]
    return np.concatenate(images), np.repeat(np.arange(len(prompts)), n)
