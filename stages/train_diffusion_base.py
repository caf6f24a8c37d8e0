"""Stage train_diffusion_base: the Stable Diffusion base model, pretrained here.

Builds a ``StableDiffusionPipeline`` from ``diffusion.model`` around the trained VAE
(CLIP tokenizer, a random frozen CLIP text encoder, a new UNet) and trains the UNet
on every PneumoniaMNIST training image with one generic prompt. The EMA weights of
the last epoch are saved. With ``diffusion.pretrained`` set, it pins that pipeline:
``pretrained.json`` names its hub id and the revision in the model cache, and the
stages downstream load exactly that snapshot (nothing is copied).

Inputs:  ``diffusion.paths.data``, ``diffusion.paths.vae``; params ``diffusion.pretrained``,
         ``diffusion.model``, ``diffusion.base_train``.
Outputs: ``diffusion.paths.base`` (``save_pretrained`` layout, or the pin);
         ``diffusion.paths.base_live``; ``paths.figures.base_training``.
"""

import logging

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.live import epoch_logger, record_pretrained
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import atomic_path, seed_everything
from cxrlab.generation.model import build_pipeline, encode_latents, pin_pretrained, to_rgb
from cxrlab.generation.train import make_conditioning, train_base_unet
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("train_diffusion_base")


def main() -> None:
    """Train the base pipeline and save it, or pin the pretrained one."""
    from diffusers import AutoencoderKL

    params = load_section("diffusion")
    paths, cfg, res = params.paths, params.base_train, params.model.resolution
    seed_everything(cfg.seed)
    figure = paths.figures.base_training
    if params.pretrained:
        pin = pin_pretrained(params.pretrained, paths.base)
        log.info("pinned %s at revision %s", pin["source"], pin["revision"])
        record_pretrained(paths.base_live, figure, params.pretrained)
        return
    pipe = build_pipeline(params.model, cfg.seed)
    pipe.vae = AutoencoderKL.from_pretrained(paths.vae)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    splits = load_pneumoniamnist(paths.data)
    latents = {s: encode_latents(pipe.vae, to_rgb(splits[s].images, res)) for s in splits}
    cond = {s: make_conditioning(pipe, [cfg.prompt] * len(latents[s])) for s in latents}
    log.info(
        "training the UNet on %d latents %s", len(latents["train"]), latents["train"].shape[1:]
    )
    with epoch_logger(paths.base_live) as (_, log_epoch):
        result, ema = train_base_unet(
            pipe.unet, pipe.scheduler, latents["train"], latents["val"], cond["train"],
            cond["val"], cfg, f"{paths.checkpoints}/base.pt", log_epoch,
        )  # fmt: skip
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    pipe.unet = ema
    plot_training_curves(result.history, figure)
    with atomic_path(paths.base) as tmp:
        pipe.save_pretrained(tmp)
    log.info("saved %s", paths.base)


if __name__ == "__main__":
    run_stage(main)
