"""Stage train_vae: the Stable Diffusion autoencoder (AutoencoderKL), trained here.

Trains on every PneumoniaMNIST training image at ``diffusion.model.resolution`` and
picks the epoch with the best validation reconstruction. Then sets the latent
``scaling_factor`` to 1 / std of the training latents, as Stable Diffusion did.
With ``diffusion.pretrained`` set, it pins that pipeline (whose VAE is used) instead:
``pretrained.json`` names its hub id and revision; nothing is copied.

Inputs:  ``diffusion.paths.data``; params ``diffusion.pretrained``, ``diffusion.model``,
         ``diffusion.vae_train``.
Outputs: ``diffusion.paths.vae`` (diffusers ``save_pretrained`` layout, or the pin);
         ``diffusion.paths.vae_live`` (dvclive); ``paths.figures.vae_training``.
"""

import logging

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.live import epoch_logger, record_pretrained
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import atomic_path, seed_everything
from cxrlab.generation.model import build_vae, pin_pretrained, set_latent_scale, to_rgb
from cxrlab.generation.train import train_vae
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("train_vae")


def main() -> None:
    """Train the VAE and save it, or pin the pretrained pipeline's."""
    params = load_section("diffusion")
    paths, cfg, res = params.paths, params.vae_train, params.model.resolution
    seed_everything(cfg.seed)
    figure = paths.figures.vae_training
    if params.pretrained:
        pin = pin_pretrained(params.pretrained, paths.vae)
        log.info("pinned %s at revision %s (its VAE)", pin["source"], pin["revision"])
        record_pretrained(paths.vae_live, figure, params.pretrained)
        return
    splits = load_pneumoniamnist(paths.data)
    train_x, val_x = to_rgb(splits["train"].images, res), to_rgb(splits["val"].images, res)
    log.info("training the VAE on %d images at %d px", len(train_x), res)
    vae = build_vae(params.model.vae, res)
    with epoch_logger(paths.vae_live) as (live, log_epoch):
        result = train_vae(vae, train_x, val_x, cfg, f"{paths.checkpoints}/vae.pt", log_epoch)
        live.log_metric("best_epoch", result.best_epoch, plot=False)
        live.log_metric("val_psnr", result.history[result.best_epoch - 1]["val_psnr"], plot=False)
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    plot_training_curves(result.history, figure)
    log.info("latent scaling factor %.4f", set_latent_scale(vae, train_x))
    with atomic_path(paths.vae) as tmp:
        vae.save_pretrained(tmp)
    log.info("saved %s", paths.vae)


if __name__ == "__main__":
    run_stage(main)
