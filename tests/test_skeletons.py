"""Hub-layout skeletons: every model the gpu profiles name loads by hub id, offline."""

import json
import os
import subprocess
import sys

import pytest

from cxrlab.skeletons import (
    BIOMEDBERT,
    BIOMEDCLIP,
    BLIP_BASE,
    LCM_SD15,
    LLAVA_LLAMA3,
    SD15,
    SD15_UNET,
    SMP_RESNET18,
    SNAPSHOT,
    build,
)
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_build_writes_only_the_repositories_asked_for(tmp_path):
    light = [BLIP_BASE, SMP_RESNET18]
    assert list(build(tmp_path, "small", only=light)) == light
    hub = tmp_path / "hub"
    assert sorted(p.name for p in hub.iterdir()) == sorted(
        f"models--{r.replace('/', '--')}" for r in light
    )
    with pytest.raises(SystemExit, match="add it to --only"):  # it is built on SD-1.5's UNet
        build(tmp_path, "small", only=[LCM_SD15])


def run_python(code: str, hf_home, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose model cache is the skeletons' HF_HOME."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sd15_skeleton_has_the_published_layout_and_configs(skeleton_home):
    root = skeleton_home / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
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


def test_hub_check_finds_every_repository_of_the_gpu_profile(skeleton_home):
    code = "import sys; from cxrlab.hub import main; sys.exit(main(['check', '-p', 'gpu']))"
    out = run_python(code, skeleton_home)
    assert out.stdout.startswith("all 6 repositories the profile loads are in the cache")


def test_the_profile_code_samples_from_the_skeletons_by_hub_id(skeleton_home, tmp_path):
    """The base pinned at the cached revision (train_diffusion_base), then load_variant and
    sample_images as generate_lora calls them."""
    code = f"""
import numpy as np
from pathlib import Path
from cxrlab.generation.model import (
    fetch_lora, load_variant, pin_pretrained, sample_images, use_sampler,
)
base = Path("{tmp_path}") / "base"
pin = pin_pretrained("{SD15}", base)
assert pin == {{"source": "{SD15}", "revision": "{SNAPSHOT}"}}, pin
assert [f.name for f in base.iterdir()] == ["pretrained.json"]  # nothing copied
lcm = fetch_lora("{LCM_SD15}", "{tmp_path}/lcm")
plain = load_variant(base, {{}})
fused = load_variant(base, {{"lcm": (lcm, 1.0)}})
use_sampler(fused, "lcm", dict(fused.scheduler.config))
use_sampler(plain, "lcm", dict(plain.scheduler.config))
ids = plain.tokenizer("a chest x-ray with pneumonia").input_ids
assert ids[0] == 49406 and ids[-1] == 49407, ids
a = sample_images(plain, "a chest x-ray", 1, 2, 1.5, 0, 1, 64)
b = sample_images(fused, "a chest x-ray", 1, 2, 1.5, 0, 1, 64)
assert a.shape == (1, 64, 64) and a.dtype == np.uint8
assert not np.array_equal(a, b), "the LCM-LoRA changed nothing"
"""
    run_python(code, skeleton_home)


def test_the_profile_code_trains_and_captions_with_the_blip_skeleton_by_hub_id(skeleton_home):
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
    run_python(code, skeleton_home)


def test_the_profile_code_labels_with_the_biomedclip_skeleton_by_hub_id(skeleton_home):
    """load_clip on the hf-hub id, as clip_label calls it: BiomedBERT's tokenizer, 224 px."""
    code = f"""
import numpy as np
from cxrlab.labeling.model import load_clip
clip = load_clip("hf-hub:{BIOMEDCLIP}")
ids = clip.tokenizer(["a chest x-ray with pneumonia"])
assert ids.shape == (1, 256), ids.shape  # context_length
row = ids[0].tolist()
end = row.index(3)  # [CLS] ... [SEP], then [PAD] to the context length
assert row[0] == 2 and row[end + 1 :] == [0] * (255 - end), row
x = clip.images_to_tensor(np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8))
assert x.shape == (2, 3, 224, 224)
image, text = clip.encode_images(x), clip.encode_texts(["normal", "pneumonia"])
assert image.shape == (2, 512) and text.shape == (2, 512)
"""
    run_python(code, skeleton_home)
    repo = skeleton_home / "hub" / f"models--{BIOMEDBERT.replace('/', '--')}"
    config = json.loads((repo / "snapshots" / SNAPSHOT / "config.json").read_text())
    assert config["vocab_size"] == 30522 and config["num_hidden_layers"] == 1


def test_the_segmenter_starts_from_the_smp_skeleton_at_smps_pinned_revision(skeleton_home):
    """build_segmenter with encoder_weights=imagenet reads the pinned snapshot, strictly."""
    code = """
import glob, torch
from safetensors.torch import load_file
from cxrlab.segmentation.model import SegmenterConfig, build_segmenter
model = build_segmenter(SegmenterConfig(encoder_weights="imagenet"))
repo = sys.argv[1] + "/hub/models--smp-hub--resnet18.imagenet"
path, = glob.glob(repo + "/snapshots/*/model.safetensors")
saved, own = load_file(path), model.encoder.state_dict()
assert len(saved) == 120
same = [torch.equal(own[k], saved[k]) for k in saved if k != "conv1.weight"]
assert all(same), same  # conv1: smp folds the RGB filters into the one grey channel
assert own["conv1.weight"].shape[1] == 1
"""
    run_python("import sys\n" + code, skeleton_home, str(skeleton_home))


def test_the_llava_skeleton_has_llama3s_tokens_and_sharded_weights(skeleton_home):
    folder = (
        skeleton_home / "hub" / "models--xtuner--llava-llama-3-8b-v1_1-transformers" / "snapshots"
    )
    folder = folder / SNAPSHOT
    config = json.loads((folder / "config.json").read_text())
    assert config["image_token_index"] == 128257 and config["text_config"]["vocab_size"] == 128320
    assert config["text_config"]["hidden_size"] == 4096 and config["vision_feature_layer"] == -2
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded, as published


def test_the_llava_skeleton_loads_with_llama3s_prompt_and_lora_targets(skeleton_home):
    """The gpu-llava captioner on its hub id (CPU, no 4-bit): the chat-template prompt, the
    caption's labels and the LoRA on the language model. Training and decoding run in
    tests/test_gpu_profile_e2e.py, through the stages."""
    code = f"""
import torch
from cxrlab.captioning.model import (CaptionerConfig, _prefix_ids, add_lora, build_captioner,
    encode_captions)
cap = build_captioner(CaptionerConfig(family="llava", pretrained="{LLAVA_LLAMA3}"))
assert cap.cfg.image_size == 336 and cap.num_image_tokens == 576
assert cap.model.dtype == torch.float32  # fp32 master weights unless loaded in 4 bits
assert cap.model.get_input_embeddings().weight.dtype == torch.float16  # the table: as published
tok = cap.tokenizer
assert (tok.bos_token_id, tok.eos_token_id, tok.convert_tokens_to_ids("<image>")) == (
    128000, 128009, 128257)
prefix = _prefix_ids(cap)
assert prefix[:2] == [128000, 128006] and prefix.count(128257) == 576
text = tok.decode([i for i in prefix if i != 128257])
assert text.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n"), text
enc = encode_captions(cap, ["clear lungs"])
assert enc["input_ids"][0, -1] == 128009 and (enc["labels"][0, : len(prefix)] == -100).all()
add_lora(cap, 4, 8)
trainable = [n for n, p in cap.model.named_parameters() if p.requires_grad]
assert trainable and all("language_model" in n and "lora_" in n for n in trainable)
"""
    run_python(code, skeleton_home)
