"""Stage train_lcm_lora: distil the diffusion base into an LCM-LoRA for few-step sampling.

Latent consistency distillation (the method of diffusers' consistency-distillation
examples) on every PneumoniaMNIST training image with the base prompt, so that
``LCMScheduler`` sampling in 2-8 steps works. With ``diffusion.lcm.pretrained`` set
(``latent-consistency/lcm-lora-sdv1-5`` on the gpu profile) it copies that LoRA.

Inputs:  ``diffusion.paths.base``, ``diffusion.paths.data``; params ``diffusion.lcm``,
         ``diffusion.base_train.prompt``, ``diffusion.model.resolution``.
Outputs: ``diffusion.paths.lcm_lora`` (``pytorch_lora_weights.safetensors``);
         ``diffusion.paths.lcm_live``; ``paths.figures.lcm_training``.
"""

import logging

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.live import epoch_logger, record_pretrained
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import seed_everything
from cxrlab.generation.model import encode_latents, fetch_lora, load_pipeline, save_lora, to_rgb
from cxrlab.generation.train import distill_lcm, make_conditioning
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("train_lcm_lora")


def main() -> None:
    """Distil (or copy) the LCM-LoRA and save it."""
    params = load_section("diffusion")
    paths, cfg, res = params.paths, params.lcm, params.model.resolution
    seed_everything(cfg.seed)
    figure = paths.figures.lcm_training
    if cfg.pretrained:
        log.info("copying the LCM-LoRA %s", cfg.pretrained)
        fetch_lora(cfg.pretrained, paths.lcm_lora)
        record_pretrained(paths.lcm_live, figure, cfg.pretrained)
        return
    pipe = load_pipeline(paths.base)
    splits = load_pneumoniamnist(paths.data)
    latents = {s: encode_latents(pipe.vae, to_rgb(splits[s].images, res)) for s in ("train", "val")}
    prompt = params.base_train.prompt
    cond = {s: make_conditioning(pipe, [prompt] * len(z)) for s, z in latents.items()}
    log.info("distilling for %d steps (LoRA rank %d)", cfg.steps, cfg.rank)
    with epoch_logger(paths.lcm_live) as (_, log_epoch):
        result = distill_lcm(
            pipe.unet, pipe.scheduler, latents["train"], latents["val"], cond["train"],
            cond["val"], cfg, f"{paths.checkpoints}/lcm.pt", log_epoch,
        )  # fmt: skip
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    plot_training_curves(result.history, figure)
    save_lora(pipe.unet, paths.lcm_lora)
    log.info("saved %s", paths.lcm_lora)


if __name__ == "__main__":
    run_stage(main)
