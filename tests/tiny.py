"""The tiny configs and data every test builds from, in one place.

Each is a part's smallest model that still runs the part's real code. Test modules import
these (and conftest's fixtures), never each other.
"""

import dataclasses

import numpy as np

from cxrlab.captioning.config import CaptionerConfig, TextConfig, VisionConfig
from cxrlab.classification.config import ClassifierConfig, TrainConfig
from cxrlab.core.augment import AugmentConfig
from cxrlab.generation.config import DiffusionConfig, UnetConfig, VaeConfig
from cxrlab.generation.config import TextConfig as PromptEncoderConfig
from cxrlab.labeling.config import ClipArchConfig
from cxrlab.segmentation.config import SegmenterConfig


def optim(cls, **changes):
    """Trainer config ``cls``'s default optimizer block with ``changes`` (a tiny run's lr)."""
    return dataclasses.replace(cls().optim, **changes)


# --- classification -------------------------------------------------------------------------
CLASSIFIER = ClassifierConfig(arch="resnet18", width=8, stem="small")
CLASSIFIER_TRAIN = TrainConfig(
    seed=0, epochs=3, batch_size=16, optim=optim(TrainConfig, lr=1e-2),
    augment=AugmentConfig(rotate_deg=5, shift=0.05, brightness=0.05),
)  # fmt: skip

# --- segmentation ---------------------------------------------------------------------------
SEGMENTER = SegmenterConfig(encoder="resnet18", encoder_depth=3, decoder_channels=[16, 8, 8])


def segmentation_split(covid, size=32):
    """(train, val) images and coded masks from a ``write_covid`` folder: 12 and the rest."""
    from cxrlab.segmentation.data import prepare_arrays, read_index, screen

    index = screen(read_index(covid), covid, 0.05)
    images, masks = prepare_arrays(index, covid, size)
    return (images[:12], masks[:12]), (images[12:], masks[12:])


# --- CLIP labelling -------------------------------------------------------------------------
CLIP = ClipArchConfig(
    embed_dim=32,
    vision={"image_size": 28, "patch_size": 7, "width": 64, "layers": 2, "head_width": 32},
    text={"context_length": 16, "width": 32, "heads": 2, "layers": 1},
)
CLIP_CAPTIONS = {
    "normal": ["a normal chest x-ray", "clear lungs"],
    "pneumonia": ["pneumonia", "lung opacity"],
}

# --- generation -----------------------------------------------------------------------------
DIFFUSION = DiffusionConfig(
    resolution=16,
    vae=VaeConfig(block_out_channels=[8, 16], norm_num_groups=4),
    unet=UnetConfig(block_out_channels=[16, 32], attention_head_dim=4, norm_num_groups=8),
    text=PromptEncoderConfig(hidden_size=16, layers=1, heads=2, max_length=16),
)
# The same sizes as params.yaml overrides (one VAE layer per block) for the stage tests.
DIFFUSION_PARAMS = {
    "resolution": 16,
    "vae": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
    "unet": {"block_out_channels": [16, 32], "attention_head_dim": 4, "norm_num_groups": 8},
    "text": {"hidden_size": 16, "layers": 1, "heads": 2, "max_length": 16},
}

# --- captioning -----------------------------------------------------------------------------
CAPTION_VISION = VisionConfig(
    hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, patch_size=8
)
CAPTION_TEXT = TextConfig(
    init="random", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
)
CAPTIONS = ["PA chest radiograph. Cardiomegaly.", "AP chest radiograph. No acute abnormality."]


def captioner(family="blip", **kw) -> CaptionerConfig:
    """A 32 px captioner of ``family`` with one-layer towers; ``kw`` replaces fields."""
    return CaptionerConfig(family=family, image_size=32, max_length=16, vision=CAPTION_VISION,
                           text=CAPTION_TEXT, **kw)  # fmt: skip


def caption_images(n=8, seed=0):
    """Two easily told apart kinds: bright left half vs bright right half."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, 32, 32)).astype(np.uint8)
    images[0::2, :, :16] += 150
    images[1::2, :, 16:] += 150
    return images


def pretrained_lm(folder):
    """A tiny Llama saved with a LLaMA-3-style tokenizer: a stand-in for a fetched LM."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from cxrlab.skeletons import llama3_tokenizer

    tokenizer = llama3_tokenizer(" ".join(CAPTIONS).lower().replace(".", "").split())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
