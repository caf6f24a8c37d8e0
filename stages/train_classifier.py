"""Stage train_classifier: ResNet on PneumoniaMNIST train, best epoch picked on val.

Inputs:  ``classifier.paths.data`` (the PneumoniaMNIST npz); params ``classifier.model``
         and ``classifier.train``.
Outputs: ``classifier.paths.model`` (model.safetensors + config.json);
         ``classifier.paths.train_live`` (dvclive: metrics.json and per-epoch curves);
         ``classifier.paths.figures.training_curves``.
Resumes from ``classifier.paths.checkpoint`` when a previous run was interrupted.
Runs as several processes with ``accelerate launch`` (cxrlab.core.runtime).
"""

import logging
from dataclasses import asdict

from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.classification.model import build_classifier
from cxrlab.classification.train import train_classifier
from cxrlab.core.checkpoint import save_model
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.live import epoch_logger
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import seed_everything
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("train_classifier")


def main() -> None:
    """Train, then save the best model, its metrics and its curves."""
    params = load_section("classifier")
    paths, cfg = params.paths, params.train
    seed_everything(cfg.seed)
    splits = load_pneumoniamnist(paths.data)
    log.info(
        "train %d, val %d images at %d px", len(splits["train"]), len(splits["val"]), cfg.image_size
    )
    model = build_classifier(params.model)

    with epoch_logger(paths.train_live) as (live, log_epoch):
        result = train_classifier(
            model, splits["train"], splits["val"], cfg, paths.checkpoint, log_epoch
        )
        live.log_metric("best_epoch", result.best_epoch, plot=False)
        live.log_metric(f"best_val_{cfg.select_metric}", result.best_score, plot=False)

    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    meta = {
        "model": asdict(params.model),
        "image_size": cfg.image_size,
        "class_names": list(CLASS_NAMES),
        "best_epoch": result.best_epoch,
    }
    save_model(paths.model, model, meta)
    plot_training_curves(result.history, paths.figures.training_curves)
    log.info("saved %s", paths.model)


if __name__ == "__main__":
    run_stage(main)
