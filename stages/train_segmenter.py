"""Stage train_segmenter: an smp U-Net on the covid_lungseg train split, best epoch on val.

Inputs:  ``segmentation.paths.prepared`` (arrays.npz, manifest.csv); params
         ``segmentation.model`` and ``segmentation.train``.
Outputs: ``segmentation.paths.model`` (model.safetensors + config.json);
         ``segmentation.paths.train_live`` (dvclive: metrics.json, per-epoch curves);
         ``segmentation.paths.figures.training_curves``.
Checkpoints every epoch to ``segmentation.paths.checkpoint`` and resumes from it.
"""

import logging
from dataclasses import asdict

from cxrlab.core.checkpoint import save_model
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.live import epoch_logger
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import seed_everything
from cxrlab.params import load_section
from cxrlab.segmentation.data import load_prepared
from cxrlab.segmentation.model import build_segmenter
from cxrlab.segmentation.train import train_segmenter
from cxrlab.stage import run_stage

log = logging.getLogger("train_segmenter")


def main() -> None:
    """Train, then save the best model, its metrics and its curves."""
    params = load_section("segmentation")
    paths, cfg = params.paths, params.train
    seed_everything(cfg.seed)
    model = build_segmenter(params.model)  # a bad model config stops before any reading
    splits = load_prepared(paths.prepared)
    size = splits["train"][0].shape[-1]
    counts = {name: len(images) for name, (images, _) in splits.items()}
    log.info("train %d, val %d images at %d px", counts["train"], counts["val"], size)
    with epoch_logger(paths.train_live) as (live, log_epoch):
        result = train_segmenter(
            model, splits["train"], splits["val"], cfg, paths.checkpoint, log_epoch
        )
        live.log_metric("best_epoch", result.best_epoch, plot=False)
        live.log_metric("best_val_dice", result.best_score, plot=False)
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    save_model(
        paths.model,
        model,
        {"model": asdict(params.model), "image_size": size, "best_epoch": result.best_epoch},
    )
    plot_training_curves(result.history, paths.figures.training_curves)
    log.info("saved %s (val Dice %.4f)", paths.model, result.best_score)


if __name__ == "__main__":
    run_stage(main)
