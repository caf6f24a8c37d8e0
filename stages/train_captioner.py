"""Stage train_captioner: fine-tune BLIP (or the LLaVA-style VLM) on the caption pairs.

Cross-entropy on the caption tokens, AdamW with linear warmup and decay, full or
LoRA fine-tune (``captioning.train.finetune``); the epoch with the lowest val loss
is kept. Checkpoints every epoch and resumes.

Inputs:  ``captioning.paths.data``; params ``captioning.model``, ``captioning.train``
         (its ``precision`` over the top-level one).
Outputs: ``captioning.paths.model`` (Hugging Face layout, ``adapter/`` for LoRA);
         ``captioning.paths.train_live``; ``paths.figures.training``.
"""

import logging

from cxrlab.captioning.data import load_caption_data, split_of
from cxrlab.captioning.model import build_captioner, save_captioner
from cxrlab.captioning.train import train_captioner
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.live import epoch_logger
from cxrlab.core.runtime import is_main_process, use_precision
from cxrlab.core.utils import seed_everything
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("train_captioner")


def main() -> None:
    """Train and save the captioner."""
    params = load_section("captioning")
    paths, cfg = params.paths, params.train
    if cfg.precision:  # the captioner's own, over the top-level param
        log.info("training in %s", use_precision(cfg.precision))
    seed_everything(cfg.seed)
    pairs, images = load_caption_data(paths.data)
    captioner = build_captioner(params.model)
    with epoch_logger(paths.train_live) as (live, log_epoch):
        result = train_captioner(
            captioner, split_of(pairs, images, "train"), split_of(pairs, images, "val"), cfg,
            f"{paths.checkpoints}/captioner.pt", log_epoch,
        )  # fmt: skip
        live.summary["best_epoch"] = result.best_epoch
        live.summary["train_seconds"] = round(result.seconds, 1)
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    plot_training_curves(result.history, paths.figures.training)
    save_captioner(captioner, paths.model)
    log.info("saved %s (best epoch %d)", paths.model, result.best_epoch)


if __name__ == "__main__":
    run_stage(main)
