"""The Hugging Face repositories the active profile loads: list them, check the cache, fetch.

    python -m cxrlab.hub list       # every repository the profile names, auxiliary ones too
    python -m cxrlab.hub check      # what the model cache lacks, one line each; exit 1
    python -m cxrlab.hub download   # fill the cache (HF_HOME) from the hub (needs access)

The cpu profile trains everything here and needs none. The gpu profile loads BiomedCLIP
(and the BiomedBERT repository its text tower and tokenizer come from), Stable Diffusion
1.5 with the published LCM-LoRA, BLIP-base or LLaVA, and the smp ImageNet encoder.
Offline (``HF_HUB_OFFLINE=1``, as ``make`` sets it), every stage checks the cache first
(:func:`check_offline`), so an empty cache fails in seconds with the list of what is
missing, not an hour into the pipeline.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrlab.core.errors import ConfigError, DataError

# open_clip models name a second repository for their Hugging Face text tower and
# tokenizer in their open_clip_config.json (text_cfg.hf_model_name). Known here for the
# ones the profiles use, so `list` is complete before anything is downloaded.
OPEN_CLIP_TEXT_TOWERS = {
    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": (
        "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    ),
}

# What diffusers' StableDiffusionPipeline.from_pretrained reads from an SD-1.5 layout.
SD_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)


@dataclass(frozen=True)
class Repo:
    """A hub repository, the files the project loads from it, and the param naming it."""

    repo_id: str
    files: tuple[str, ...]
    param: str
    revision: str | None = None


def _captioner_files(family: str) -> tuple[str, ...]:
    if family == "llava":
        return ("config.json", "model.safetensors.index.json", "preprocessor_config.json",
                "tokenizer_config.json", "tokenizer.json")  # fmt: skip
    return ("config.json", "model.safetensors", "preprocessor_config.json",
            "tokenizer_config.json")  # fmt: skip


SMP_PARAM = "segmentation.model.encoder_weights"


def _smp_repo(encoder: str, weights: str) -> Repo:
    """The smp encoder's repository; the revision smp pins is read only at download.

    Importing smp costs seconds: too slow for the check every stage runs first.
    """
    return Repo(f"smp-hub/{encoder}.{weights}", ("config.json", "model.safetensors"), SMP_PARAM)


def _pinned(repo: Repo) -> Repo:
    """``repo`` with the revision its loader pins (smp's encoders pin one)."""
    if repo.param != SMP_PARAM:
        return repo
    from segmentation_models_pytorch.encoders import encoders

    encoder, weights = repo.repo_id.removeprefix("smp-hub/").split(".", 1)
    try:
        settings = encoders[encoder]["pretrained_settings"][weights]
    except KeyError as exc:
        raise ConfigError(
            f"segmentation.model: smp has no '{weights}' weights for encoder '{encoder}'."
        ) from exc
    return Repo(settings["repo_id"], repo.files, repo.param, settings.get("revision"))


def repos(params: dict[str, Any]) -> list[Repo]:
    """The repositories the params (profile applied) load from the hub, in pipeline order."""
    found: list[Repo] = []
    clip_id = params["clip"].get("model_id", "")
    if clip_id.startswith("hf-hub:"):
        repo_id = clip_id.removeprefix("hf-hub:")
        found.append(Repo(repo_id, ("open_clip_config.json", "open_clip_pytorch_model.bin"),
                          "clip.model_id"))  # fmt: skip
        if repo_id in OPEN_CLIP_TEXT_TOWERS:
            found.append(Repo(OPEN_CLIP_TEXT_TOWERS[repo_id], ("config.json", "vocab.txt"),
                              "clip.model_id (its text tower and tokenizer)"))  # fmt: skip
    from cxrlab.segmentation.config import names_weight_file

    seg = params["segmentation"].get("model", {})
    if seg.get("encoder_weights") and not names_weight_file(seg["encoder_weights"]):
        found.append(_smp_repo(seg.get("encoder", "resnet18"), seg["encoder_weights"]))
    diffusion = params["diffusion"]
    if diffusion.get("pretrained"):
        found.append(Repo(diffusion["pretrained"], SD_FILES, "diffusion.pretrained"))
    lcm = (diffusion.get("lcm") or {}).get("pretrained")
    if lcm:
        found.append(Repo(lcm, ("pytorch_lora_weights.safetensors",), "diffusion.lcm.pretrained"))
    model = params["captioning"].get("model", {})
    if model.get("pretrained"):
        files = _captioner_files(model.get("family", "blip"))
        found.append(Repo(model["pretrained"], files, "captioning.model.pretrained"))
    return [r for r in found if not Path(r.repo_id).exists()]  # a local folder is no hub id


def missing(repo: Repo) -> list[str]:
    """The files of ``repo`` the local Hugging Face cache does not hold.

    Without a pinned revision, a file in any cached snapshot counts (a cache filled at
    a pinned revision, as smp's encoders are, has no ``main`` ref).
    """
    from huggingface_hub import constants, try_to_load_from_cache

    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.repo_id.replace('/', '--')}"
    gone = []
    for name in repo.files:
        if isinstance(try_to_load_from_cache(repo.repo_id, name, revision=repo.revision), str):
            continue
        if repo.revision is None and any((folder / "snapshots").glob(f"*/{name}")):
            continue
        gone.append(name)
    return gone


def report(params: dict[str, Any]) -> list[str]:
    """One line per repository with files missing from the cache (empty: all there)."""
    lines = []
    for repo in repos(params):
        gone = missing(repo)
        if gone:
            lines.append(f"{repo.repo_id} ({repo.param}): missing {', '.join(gone)}")
    return lines


def check_offline(params: dict[str, Any]) -> None:
    """Stop at once, offline, if the cache lacks a repository the profile loads.

    Raises:
        DataError: Listing every missing repository and how to fill the cache.
    """
    if not repos(params):  # the cpu profile: nothing from the hub
        return
    from huggingface_hub import constants

    if not (constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE") == "1"):
        return
    lines = report(params)
    if lines:
        where = constants.HF_HUB_CACHE
        raise DataError(
            f"profile '{params.get('profile', 'cpu')}' needs {len(lines)} hub repositories "
            f"that the model cache ({where}) lacks, and HF_HUB_OFFLINE=1 forbids downloading:\n  "
            + "\n  ".join(lines)
            + "\nFill it with `python -m cxrlab.hub download` on a machine with hub access "
            "(then copy HF_HOME here), or unset HF_HUB_OFFLINE to let the stages download."
        )


def allow_patterns(repo: Repo) -> list[str]:
    """The files ``download`` fetches of ``repo``, not every format it publishes.

    Every config and tokenizer file (small), the weights the project loads and their
    shards. SD-1.5's repository also holds single-file checkpoints of several GB each and
    fp16, non-EMA and PyTorch-pickle copies of every weight, which nothing here reads.
    """
    weights = [name for name in repo.files if not name.endswith((".json", ".txt"))]
    if "model.safetensors.index.json" in repo.files:
        weights.append("model-*-of-*.safetensors")  # the shards the index names
    return ["*.json", "*.txt", *weights]


def download(params: dict[str, Any]) -> None:
    """Fetch every repository the profile loads into the cache (HF_HOME)."""
    from huggingface_hub import snapshot_download

    for repo in map(_pinned, repos(params)):
        path = snapshot_download(
            repo.repo_id, revision=repo.revision, allow_patterns=allow_patterns(repo)
        )
        print(f"{repo.repo_id}: {path}")


def main(argv: list[str] | None = None) -> int:
    """``list``, ``check`` or ``download`` for the profile params.yaml (and -p) select."""
    from cxrlab.core.config import load_params
    from cxrlab.params import apply_profile

    parser = argparse.ArgumentParser(
        prog="python -m cxrlab.hub", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["list", "check", "download"])
    parser.add_argument("-p", "--profile", help="a profile other than params.yaml's")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    raw = load_params(args.params)
    if args.profile:
        raw = {**raw, "profile": args.profile}
    params = apply_profile(raw)
    if args.command == "list":
        for repo in repos(params):
            print(f"{repo.repo_id}\t{repo.param}\t{', '.join(repo.files)}")
        if not repos(params):
            print(f"profile '{params.get('profile', 'cpu')}' loads nothing from the hub")
        return 0
    if args.command == "download":
        download(params)
        return 0
    lines = report(params)
    for line in lines:
        print(line)
    if not lines:
        print(f"all {len(repos(params))} repositories the profile loads are in the cache")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
