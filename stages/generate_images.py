"""Stage generate_images: images per class prompt, each sampler, with and without the LoRA.

For every sampler in ``diffusion.generate.samplers`` (LCM with the LCM-LoRA, and a
DDIM baseline on the same base) and both variants (``base``: no fine-tuned LoRA;
``lora``: with it), generates ``per_prompt`` images for each class caption of
``clip.subset.text`` from fixed seeds, and times it. The LoRAs are fused into the
UNet's weights before sampling, so they cost nothing per step.

Inputs:  ``diffusion.paths.{base,lcm_lora,lora}``, ``diffusion.paths.data`` (real images
         for the grids); params ``diffusion.generate``, ``diffusion.model.resolution``,
         ``clip.subset.text``.
Outputs: ``diffusion.paths.generated``: ``<sampler>_<variant>.npz`` (images uint8, labels)
         and ``speed.json``; ``<diffusion.paths.figures>/<sampler>_grid.png``.
"""

import json
import logging
import time
from pathlib import Path

import numpy as np

from cxrlab.data.pneumoniamnist import CLASS_NAMES, load_pneumoniamnist
from cxrlab.errors import ConfigError
from cxrlab.models.diffusion import check_lora_record, load_variant, sample_images, use_sampler
from cxrlab.params import load_section
from cxrlab.reporting.generation import save_sample_grid
from cxrlab.utils import atomic_path, run_stage, seed_everything

log = logging.getLogger("generate_images")
VARIANTS = ("base", "lora")


def main() -> None:
    """Generate every sampler x variant x prompt and save images, speeds and grids."""
    params, captions = load_section("diffusion"), load_section("clip").subset.text
    paths, cfg, res = params.paths, params.generate, params.model.resolution
    seed_everything(cfg.seed)
    if cfg.per_prompt < 2 or not cfg.samplers:
        raise ConfigError("diffusion.generate needs per_prompt >= 2 and at least one sampler.")
    missing = [c for c in CLASS_NAMES if not captions.get(c)]
    if missing:
        raise ConfigError(f"clip.subset.text has no caption for class '{missing[0]}'.")
    check_lora_record(paths.lora)  # never sample from an adapter that diverged
    real = load_pneumoniamnist(paths.data)["test"]
    speed, out = {}, {}
    for sampler, sampling in cfg.samplers.items():
        rows = []
        for variant in VARIANTS:
            adapters = {"lcm": (paths.lcm_lora, 1.0)} if sampler == "lcm" else {}
            if variant == "lora":
                adapters["lora"] = (paths.lora, cfg.lora_scale)
            pipe = load_variant(paths.base, adapters)
            use_sampler(pipe, sampler, dict(pipe.scheduler.config))
            key = f"{sampler}_{variant}"
            images, speed[key] = _generate(pipe, sampling, captions, cfg, res)
            out[key] = np.concatenate(images)
            rows += [
                (f"{variant}: {n}", im[: cfg.grid_columns])
                for n, im in zip(CLASS_NAMES, images, strict=True)
            ]
            log.info("%s: %.2f images/s", key, speed[key]["images_per_s"])
        real_rows = [
            (f"real: {name}", real.images[real.labels == c][: cfg.grid_columns])
            for c, name in enumerate(CLASS_NAMES)
        ]
        save_sample_grid(
            real_rows + rows,
            f"{sampler}, {sampling.steps} steps, guidance {sampling.guidance_scale} "
            "(same seeds with and without the LoRA)",
            Path(paths.figures) / f"{sampler}_grid.png",
        )
    labels = np.repeat(np.arange(len(CLASS_NAMES)), cfg.per_prompt)
    with atomic_path(paths.generated) as tmp:
        tmp.mkdir(parents=True)
        for key, images in out.items():
            np.savez_compressed(tmp / f"{key}.npz", images=images, labels=labels)
        (tmp / "speed.json").write_text(json.dumps(speed, indent=2) + "\n")
    log.info("saved %s", paths.generated)


def _generate(pipe, sampling, captions, cfg, res) -> tuple[list[np.ndarray], dict]:
    """``per_prompt`` images per class caption (seed ``seed + class``), and the speed."""

    def run(c: int, n: int) -> np.ndarray:
        return sample_images(
            pipe, captions[CLASS_NAMES[c]], n, sampling.steps, sampling.guidance_scale,
            cfg.seed + c, cfg.batch_size, res,
        )  # fmt: skip

    run(0, 2)  # warm-up, not timed
    start = time.perf_counter()
    images = [run(c, cfg.per_prompt) for c in range(len(CLASS_NAMES))]
    seconds = time.perf_counter() - start
    return images, {"images_per_s": len(CLASS_NAMES) * cfg.per_prompt / seconds}


if __name__ == "__main__":
    run_stage(main)
