"""The gpu profiles end to end on the CPU: `dvc exp run` on hub-layout skeletons.

The gpu profile loads BiomedCLIP, smp's ImageNet encoder, SD-1.5 with the LCM-LoRA and
BLIP-base by hub id; gpu-llava swaps in LLaVA-LLaMA-3-8B. No machine here reaches the
hub, so `python -m cxrlab.skeletons --depth small` writes every one of them into an
offline HF_HOME (published ids, file names, configs and tokenizers, random weights), and
the real pipeline runs against it, offline, at smoke size: a few PneumoniaMNIST images
(a small npz beside the data), a few caption images per split (captioning.prepare.
max_per_split), 64 px, one epoch, a couple of steps. What is checked is that every stage
of both profiles loads its hub model and completes, not what the random weights score.
Each stage's wall time and peak host memory go to build/gpu_smoke_stages.tsv.

`make test` (CI) runs the stages that load a hub model and what they need
(:data:`TARGETS`); ``CXRLAB_GPU_SMOKE=full`` (`make test-gpu-smoke`) runs the whole
pipeline, evaluation and report included (about 12 minutes more on 2 cores).
"""

import json
import os
import re
import time

import numpy as np
import pytest
import yaml

from cxrlab.captioning.model import CONFIG_FILE
from cxrlab.skeletons import LLAVA_LLAMA3, SD15, SNAPSHOT
from tests.conftest import (
    SHARED_DATA,
    STAGE_SECONDS,
    commit_all,
    copy_repository,
    offline_mirrors,
    run_timed,
    stage_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FULL = os.environ.get("CXRLAB_GPU_SMOKE") == "full"
SMOKE_TSV = STAGE_SECONDS.parent / "gpu_smoke_stages.tsv"
RUN_TSV = STAGE_SECONDS.parent / "gpu_smoke_run_seconds.tsv"
MINI = "smoke/pneumoniamnist.npz"  # the first images of each split, committed in the copy
MINI_SIZES = {"train": 32, "val": 16, "test": 16}
HUB_STAGES = ("clip_label", "train_segmenter", "train_vae", "train_diffusion_base",
              "train_lcm_lora", "train_lora", "generate_lora", "train_captioner",
              "caption_images")  # fmt: skip
# What `dvc exp run` is asked for: every stage that loads a hub model, and so their inputs.
TARGETS = () if FULL else ("clip_label", "train_segmenter", "generate_lora", "caption_images")


def smoke_profile(gpu: dict) -> None:
    """Lay smoke sizes over the gpu profile (the models and their settings stay)."""
    gpu.update(device="cpu", precision="fp32")  # explicit: this machine has no GPU
    gpu["classifier"]["train"].update(epochs=1, batch_size=16)
    gpu["segmentation"]["prepare"]["image_size"] = 64
    gpu["segmentation"]["train"] = {"epochs": 1}
    gpu["clip"]["train"] = {"epochs": 1}
    gpu["clip"]["subset"] = {"per_class": 4}
    diffusion = gpu["diffusion"]
    diffusion["model"]["resolution"] = 64
    diffusion["generate"].update(per_prompt=2, batch_size=2)
    diffusion["generate"]["samplers"]["ddim"] = {"steps": 2}
    gpu["lora"].update(steps=2, eval_every=2, batch_size=2, val_per_class=2)
    captioning = gpu["captioning"]
    captioning["prepare"]["max_per_split"] = 3
    captioning["train"].update(epochs=1, batch_size=2)
    captioning["decode"] = {"max_new_tokens": 4, "num_beams": 2, "batch_size": 2}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, skeleton_home):
    if not (SHARED_DATA / "pneumoniamnist").is_dir():
        pytest.skip(f"no data mirror at {SHARED_DATA}")
    tmp = tmp_path_factory.mktemp("gpu-smoke")
    dest = copy_repository(tmp / "cxrlab")
    full = np.load(SHARED_DATA / "pneumoniamnist" / "pneumoniamnist.npz")
    (dest / MINI).parent.mkdir(parents=True)
    first = {
        f"{s}_{k}": full[f"{s}_{k}"][:n]
        for s, n in MINI_SIZES.items()
        for k in ("images", "labels")
    }
    np.savez(dest / MINI, **first)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["fetch"]["mirrors"] = offline_mirrors()
    params["fetch"]["allow_upstream"] = False
    for part in ("classifier", "clip", "diffusion"):
        params[part]["paths"]["data"] = MINI
    smoke_profile(params["profiles"]["gpu"])
    llava = params["profiles"]["gpu-llava"]["captioning"]
    llava["model"]["load_in_4bit"] = False  # bitsandbytes 4-bit needs CUDA; the rest is tested
    llava["prepare"] = {"max_per_split": 2}  # about 20 s a training image on 2 cores
    llava["train"]["batch_size"] = 1
    llava["decode"] = {"batch_size": 1, "num_beams": 1}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = commit_all(dest)
    env = {**env, "HF_HOME": str(skeleton_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    return dest, params, env


def stage_memory(out: str) -> dict[str, float]:
    """Peak host RSS (GB) per stage, from the line run_stage logs when a stage ends."""
    peaks, stage = {}, None
    for line in out.splitlines():
        if line.startswith("Running stage '"):
            stage = line.split("'")[1]
        found = re.search(r"done in \d+ s; peak memory: peak_rss_gb ([\d.]+) GB", line)
        if found and stage:
            peaks[stage] = float(found.group(1))
    return peaks


def record(profile: str, out: str, seconds: float) -> None:
    """Append this run's per-stage wall time and peak RSS to build/gpu_smoke_stages.tsv."""
    spans = dict(
        (row.split("\t")[1], row.split("\t")[0]) for row in RUN_TSV.read_text().splitlines()[1:]
    )
    mode = "a" if SMOKE_TSV.exists() and profile != "gpu" else "w"
    with SMOKE_TSV.open(mode) as f:
        if mode == "w":
            f.write("profile\tstage\tseconds\tpeak_rss_gb\n")
        f.write(f"{profile}\t(all)\t{seconds:.0f}\t\n")
        for stage, rss in stage_memory(out).items():
            f.write(f"{profile}\t{stage}\t{spans.get(stage, '')}\t{rss}\n")


def test_the_gpu_profile_runs_every_stage_on_the_skeletons(repo):
    root, params, env = repo
    start = time.perf_counter()
    out = run_timed(["dvc", "exp", "run", "-S", "profile=gpu", *TARGETS], root, env, RUN_TSV)
    record("gpu", out, time.perf_counter() - start)
    ran = re.findall(r"Running stage '([^']+)'", out)
    for stage in HUB_STAGES:
        assert stage in ran, stage
    if FULL:
        summary = json.loads((root / params["report"]["paths"]["summary"]).read_text())
        assert summary["profile"] == "gpu" and summary["missing_artifacts"] == []
        gen = stage_metrics(root, params["diffusion"]["paths"]["eval_live"])
        assert {"lcm", "ddim"} <= set(gen)
    base = root / params["diffusion"]["paths"]["base"]
    pin = json.loads((base / "pretrained.json").read_text())  # SD-1.5 pinned, not copied
    assert pin == {"source": SD15, "revision": SNAPSHOT} and len(list(base.iterdir())) == 1
    generated = root / params["diffusion"]["paths"]["generated"]
    for variant in ("base", "lora") if FULL else ("lora",):
        for sampler in ("lcm", "ddim"):
            images = np.load(generated / variant / f"{sampler}.npz")["images"]
            assert images.shape == (2 * 2, 64, 64) and images.dtype == np.uint8, images.shape
    labels = (root / params["clip"]["paths"]["labels"]).read_text().splitlines()
    assert len(labels) == 1 + sum(MINI_SIZES.values())  # BiomedCLIP labelled the mini npz
    captions = (root / params["captioning"]["paths"]["data"] / "captions.csv").read_text()
    assert len(captions.splitlines()) == 1 + 3 * 3  # max_per_split of each split
    model = json.loads((root / params["captioning"]["paths"]["model"] / "config.json").read_text())
    assert model["architectures"] == ["BlipForConditionalGeneration"]
    assert set(HUB_STAGES) <= set(stage_memory(out))


def test_the_llava_profile_reruns_only_the_captioner_on_its_skeleton(repo):
    root, params, env = repo
    start = time.perf_counter()
    target = () if FULL else ("caption_images",)
    out = run_timed(["dvc", "exp", "run", "-S", "profile=gpu-llava", *target], root, env, RUN_TSV)
    record("gpu-llava", out, time.perf_counter() - start)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {"train_captioner", "caption_images"} <= ran
    assert not ran & set(HUB_STAGES[:7]), ran  # the rest of the profile is unchanged
    paths = params["captioning"]["paths"]
    model = root / paths["model"]
    assert (model / "adapter" / "adapter_config.json").is_file()  # the LoRA adapter alone
    meta = json.loads((model / CONFIG_FILE).read_text())["config"]
    assert meta["family"] == "llava" and meta["pretrained"] == LLAVA_LLAMA3
    predictions = (root / paths["predictions"]).read_text().splitlines()
    assert len(predictions) == 1 + 2
