"""Stages generate_base and generate_lora: images per class prompt, for each sampler.

``python stages/generate_images.py VARIANT``, with VARIANT ``base`` (the diffusion base
alone) or ``lora`` (with the class LoRA fused in). For every sampler in
``diffusion.generate.samplers`` (LCM with the LCM-LoRA, and a DDIM baseline on the same
base) it generates ``per_prompt`` images for each class caption of ``clip.subset.text``
from fixed seeds (the same for both variants), and times it. The LoRAs are fused into
the UNet's weights before sampling, so they cost nothing per step. The two variants are
separate stages so that an experiment on the class LoRA (``-S lora.steps=1000``) does
not regenerate the base model's images.

Inputs:  ``diffusion.paths.{base,lcm_lora}`` and, for ``lora``, ``diffusion.paths.lora``;
         params ``diffusion.generate``, ``diffusion.model.resolution``, ``clip.subset.text``.
Outputs: ``<diffusion.paths.generated>/<VARIANT>/``: ``<sampler>.npz`` (images uint8,
         labels) and ``speed.json``.
"""

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from cxrlab.classification.data import CLASS_NAMES
from cxrlab.core.errors import ConfigError
from cxrlab.core.utils import atomic_path, seed_everything
from cxrlab.generation.model import (
    check_lora_record,
    load_variant,
    sample_classes,
    use_sampler,
    variant_adapters,
)
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("generate_images")
VARIANTS = ("base", "lora")


def main() -> None:
    """Generate every sampler x prompt for the variant named on the command line."""
    if len(sys.argv) != 2 or sys.argv[1] not in VARIANTS:
        raise ConfigError(f"usage: generate_images.py VARIANT, with VARIANT one of {VARIANTS}.")
    variant = sys.argv[1]
    params, captions = load_section("diffusion"), load_section("clip").subset.text
    paths, cfg, res = params.paths, params.generate, params.model.resolution
    seed_everything(cfg.seed)
    if cfg.per_prompt < 2 or not cfg.samplers:
        raise ConfigError("diffusion.generate needs per_prompt >= 2 and at least one sampler.")
    missing = [c for c in CLASS_NAMES if not captions.get(c)]
    if missing:
        raise ConfigError(f"clip.subset.text has no caption for class '{missing[0]}'.")
    if variant == "lora":
        check_lora_record(paths.lora)  # never sample from an adapter that diverged
    prompts = [captions[c] for c in CLASS_NAMES]
    speed, out = {}, {}
    for sampler, sampling in cfg.samplers.items():
        adapters = variant_adapters(paths, sampler, variant, cfg.lora_scale)
        pipe = load_variant(paths.base, adapters, cfg.vae_slicing)
        use_sampler(pipe, sampler, dict(pipe.scheduler.config))
        out[sampler], speed[sampler] = _generate(pipe, sampling, prompts, cfg, res)
        log.info("%s %s: %.2f images/s", sampler, variant, speed[sampler]["images_per_s"])
    dest = Path(paths.generated) / variant
    with atomic_path(dest) as tmp:
        tmp.mkdir(parents=True)
        for sampler, (images, labels) in out.items():
            np.savez_compressed(tmp / f"{sampler}.npz", images=images, labels=labels)
        (tmp / "speed.json").write_text(json.dumps(speed, indent=2) + "\n")
    log.info("saved %s", dest)


def _generate(pipe, sampling, prompts, cfg, res) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """``per_prompt`` images per class prompt (seed ``seed + class``), and the speed."""
    args = (sampling.steps, sampling.guidance_scale, cfg.seed, cfg.batch_size, res)
    sample_classes(pipe, prompts[:1], 2, *args)  # warm-up, not timed
    start = time.perf_counter()
    images, labels = sample_classes(pipe, prompts, cfg.per_prompt, *args)
    return (images, labels), {"images_per_s": len(images) / (time.perf_counter() - start)}


if __name__ == "__main__":
    run_stage(main)
