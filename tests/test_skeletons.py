"""Hub-layout skeletons: the gpu profile's SD-1.5, LCM-LoRA and BLIP-base load by hub id."""

import json
import os
import subprocess
import sys

import pytest

from cxrlab.skeletons import BLIP_BASE, LCM_SD15, SD15, SD15_UNET, SNAPSHOT, build
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf")
    assert build(home, "small") == [SD15, LCM_SD15, BLIP_BASE]
    return home


def run_python(code: str, hf_home, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose model cache is the skeletons' HF_HOME."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sd15_skeleton_has_the_published_layout_and_configs(hf_home):
    root = hf_home / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    assert (root / "refs" / "main").read_text() == SNAPSHOT
    folder = root / "snapshots" / SNAPSHOT
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
    unet = json.loads((folder / "unet" / "config.json").read_text())
    for key in ("block_out_channels", "cross_attention_dim", "attention_head_dim", "sample_size"):
        assert unet[key] == SD15_UNET[key], key
    assert unet["layers_per_block"] == 1  # small depth: real widths, fewer repeats
    vocab = json.loads((folder / "tokenizer" / "vocab.json").read_text())
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    for name in ("diffusion_pytorch_model.safetensors", "config.json"):
        assert (folder / "unet" / name).is_file() and (folder / "vae" / name).is_file()


def test_hub_check_finds_the_skeletons_and_only_lacks_the_others(hf_home):
    out = run_python("from cxrlab.hub import main; main(['check', '-p', 'gpu'])", hf_home)
    missing = out.stdout
    for repo_id in (SD15, LCM_SD15, BLIP_BASE):
        assert repo_id not in missing, missing
    assert "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in missing  # not built yet


def test_the_profile_code_samples_from_the_skeletons_by_hub_id(hf_home):
    """load_variant and sample_images, as generate_lora calls them, on the hub ids."""
    code = f"""
import numpy as np
from cxrlab.generation.model import fetch_lora, load_variant, sample_images, use_sampler
import sys, tempfile
lcm = fetch_lora("{LCM_SD15}", tempfile.mkdtemp() + "/lcm")
plain = load_variant("{SD15}", {{}})
fused = load_variant("{SD15}", {{"lcm": (lcm, 1.0)}})
use_sampler(fused, "lcm", dict(fused.scheduler.config))
use_sampler(plain, "lcm", dict(plain.scheduler.config))
ids = plain.tokenizer("a chest x-ray with pneumonia").input_ids
assert ids[0] == 49406 and ids[-1] == 49407, ids
a = sample_images(plain, "a chest x-ray", 1, 2, 1.5, 0, 1, 64)
b = sample_images(fused, "a chest x-ray", 1, 2, 1.5, 0, 1, 64)
assert a.shape == (1, 64, 64) and a.dtype == np.uint8
assert not np.array_equal(a, b), "the LCM-LoRA changed nothing"
"""
    run_python(code, hf_home)


def test_the_profile_code_trains_and_captions_with_the_blip_skeleton_by_hub_id(hf_home):
    """build_captioner on the hub id, as train_captioner calls it; one step, then decoding."""
    code = f"""
import numpy as np, torch
from cxrlab.captioning.model import (CaptionerConfig, build_captioner, caption_loss,
    encode_captions, generate_captions, pixel_values)
cap = build_captioner(CaptionerConfig(family="blip", pretrained="{BLIP_BASE}"))
assert cap.cfg.image_size == 384 and cap.image_mean[0] == 0.48145466
tok = cap.tokenizer
assert tok.bos_token == "[DEC]" and tok.bos_token_id == 30522 and tok.sep_token_id == 102
assert tok.convert_tokens_to_ids("[ENC]") == 30523 and len(tok) == 30524
text = "no acute cardiopulmonary abnormality"
ids = encode_captions(cap, [text])["input_ids"][0].tolist()
assert ids[0] == 30522 and ids[-1] == 102 and tok.decode(ids[1:-1]) == text
x = pixel_values(cap, np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8))
assert x.shape == (2, 3, 384, 384)
opt = torch.optim.AdamW(cap.model.parameters(), lr=1e-4)
loss = caption_loss(cap, x, ["clear lungs", "right lower lobe pneumonia"])
loss.backward(); opt.step()
assert torch.isfinite(loss) and loss.item() > 5  # random weights: near log(30524)
out = generate_captions(cap, x, num_beams=2, max_new_tokens=4)
assert len(out) == 2 and all(isinstance(c, str) for c in out)
"""
    run_python(code, hf_home)
