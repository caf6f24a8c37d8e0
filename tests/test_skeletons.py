"""Hub-layout skeletons: the gpu profile's SD-1.5 and LCM-LoRA load by hub id, offline."""

import json
import os
import subprocess
import sys

import pytest

from cxrlab.skeletons import LCM_SD15, SD15, SD15_UNET, SNAPSHOT, build
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf")
    assert build(home, "small") == [SD15, LCM_SD15]
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
    assert SD15 not in missing and LCM_SD15 not in missing, missing
    assert "Salesforce/blip-image-captioning-base" in missing  # not built yet


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
