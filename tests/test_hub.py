"""The hub repositories a profile loads: listed, checked against a cache, failing fast offline."""

import pytest

from cxrlab.core.config import load_params
from cxrlab.core.errors import DataError
from cxrlab.hub import _pinned, allow_patterns, check_offline, main, report, repos
from cxrlab.params import apply_profile
from cxrlab.stage import run_stage
from tests.conftest import REPO

GPU_REPOS = [
    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",  # BiomedCLIP's text tower
    "smp-hub/resnet18.imagenet",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "latent-consistency/lcm-lora-sdv1-5",
    "Salesforce/blip-image-captioning-base",
]


def profile(name: str) -> dict:
    return apply_profile({**load_params(REPO / "params.yaml"), "profile": name})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def put(cache, repo, pinned: str | None = None) -> None:
    """Write the repo's files in hub layout: refs/main, or only a pinned revision's snapshot."""
    commit = pinned or "0" * 40
    root = cache / f"models--{repo.repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    if not pinned:
        (root / "refs" / "main").write_text(commit)
    for name in repo.files:
        (root / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "snapshots" / commit / name).write_text("{}")


def test_the_cpu_profile_needs_nothing_from_the_hub():
    assert repos(profile("cpu")) == []
    check_offline(profile("cpu"))  # no error, whatever the cache holds


def test_the_gpu_profile_lists_every_repository_it_loads(capsys):
    assert [r.repo_id for r in repos(profile("gpu"))] == GPU_REPOS
    assert main(["list", "-p", "gpu", "--params", str(REPO / "params.yaml")]) == 0
    assert capsys.readouterr().out.count("\n") == len(GPU_REPOS)
    llava = repos(profile("gpu-llava"))
    assert [r.repo_id for r in llava] == [
        *GPU_REPOS[:-1],
        "xtuner/llava-llama-3-8b-v1_1-transformers",
    ]
    assert "model.safetensors.index.json" in llava[-1].files


def test_an_empty_cache_is_listed_repository_by_repository(cache, capsys):
    params = profile("gpu")
    lines = report(params)
    assert [line.split(" ")[0] for line in lines] == GPU_REPOS
    assert "missing open_clip_config.json" in lines[0]
    with pytest.raises(DataError, match="BiomedNLP-BiomedBERT.*\n.*smp-hub") as err:
        check_offline(params)
    assert "python -m cxrlab.hub download" in str(err.value)
    assert main(["check", "-p", "gpu", "--params", str(REPO / "params.yaml")]) == 1


def test_a_filled_cache_passes_and_one_missing_file_is_named(cache):
    params = profile("gpu")
    for repo in repos(params):  # smp's encoder as smp downloads it: at its pinned revision
        put(cache, repo, "1" * 40 if repo.repo_id.startswith("smp-hub/") else None)
    assert report(params) == []
    check_offline(params)
    sd = cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5" / "snapshots" / ("0" * 40)
    (sd / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert report(params) == [
        "stable-diffusion-v1-5/stable-diffusion-v1-5 (diffusion.pretrained): "
        "missing unet/diffusion_pytorch_model.safetensors"
    ]


def test_a_stage_on_the_gpu_profile_stops_first(cache, tmp_path, monkeypatch, capsys):
    """Empty cache offline: the list of what is missing. Filled cache, no GPU and
    device auto: one line saying how to run on the CPU anyway. Nothing of main() runs."""
    import torch

    text = (REPO / "params.yaml").read_text().replace("profile: cpu", "profile: gpu", 1)
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    ran = []
    with pytest.raises(SystemExit):
        run_stage(lambda: ran.append(1))
    assert "smp-hub/resnet18.imagenet" in capsys.readouterr().err and ran == []
    for repo in repos(profile("gpu")):
        put(cache, repo)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        run_stage(lambda: ran.append(1))
    assert "set -S profiles.gpu.device=cpu" in capsys.readouterr().err and ran == []


def test_download_asks_for_the_revision_smp_pins():
    from segmentation_models_pytorch.encoders import encoders

    smp = next(r for r in repos(profile("gpu")) if r.repo_id.startswith("smp-hub/"))
    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    assert smp.revision is None  # the check needs no smp import
    assert _pinned(smp).repo_id == settings["repo_id"] == smp.repo_id
    assert _pinned(smp).revision == settings["revision"]


# The SD-1.5 repository as published: what `download` must fetch, and the rest.
SD15_LISTING = {
    "needed": ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
               "text_encoder/model.safetensors", "tokenizer/merges.txt",
               "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
               "tokenizer/vocab.json", "unet/config.json",
               "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
               "vae/diffusion_pytorch_model.safetensors",
               "feature_extractor/preprocessor_config.json"],
    "not": ["v1-5-pruned.ckpt", "v1-5-pruned.safetensors", "v1-5-pruned-emaonly.ckpt",
            "v1-5-pruned-emaonly.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.non_ema.safetensors", "unet/diffusion_pytorch_model.bin",
            "text_encoder/pytorch_model.bin", "safety_checker/model.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors"],
}  # fmt: skip


def test_download_fetches_what_the_loaders_read_and_not_every_published_format():
    from huggingface_hub.utils import filter_repo_objects

    def fetched(repo, names):
        return set(filter_repo_objects(names, allow_patterns=allow_patterns(repo)))

    found = {r.repo_id: r for r in repos(profile("gpu")) + repos(profile("gpu-llava"))}
    for repo in found.values():  # everything `check` asks for
        assert fetched(repo, list(repo.files)) == set(repo.files), repo.repo_id
    sd = found["stable-diffusion-v1-5/stable-diffusion-v1-5"]
    assert fetched(sd, SD15_LISTING["needed"] + SD15_LISTING["not"]) == set(SD15_LISTING["needed"])
    llava = next(r for r in found.values() if "llava" in r.repo_id)
    shards = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert fetched(llava, shards + ["pytorch_model.bin"]) == set(shards)
