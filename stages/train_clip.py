"""Stage train_clip: a small CLIP trained here, contrastively, on train-split captions.

Captions come from each training image's label through ``clip.train.captions``, so
the resulting labeller is supervised, not zero-shot (the gpu profile's BiomedCLIP is).
Checkpoints every epoch to ``clip.paths.checkpoint`` and resumes from it.

Inputs:  ``clip.paths.data`` (PneumoniaMNIST npz); params ``clip.arch``, ``clip.train``.
Outputs: ``clip.paths.model`` in open_clip's ``local-dir:`` layout;
         ``clip.paths.train_live`` (dvclive: loss, lr and temperature per epoch).
"""

import logging

from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.core.live import epoch_logger
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import seed_everything
from cxrlab.labeling.model import build_clip, save_clip
from cxrlab.labeling.train import train_clip
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("train_clip")


def main() -> None:
    """Build the CLIP from its config, train it on the train split and save it."""
    params = load_section("clip")
    seed_everything(params.train.seed)
    train = load_pneumoniamnist(params.paths.data)["train"]
    bundle = build_clip(params.arch)
    x = bundle.images_to_tensor(train.images)
    log.info("training CLIP on %d train images", len(train))
    with epoch_logger(params.paths.train_live) as (_, log_epoch):
        train_clip(bundle, x, train.labels, list(CLASS_NAMES), params.train,
                   params.paths.checkpoint, log_epoch)  # fmt: skip
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    save_clip(bundle, params.arch, params.paths.model)
    log.info("saved %s", params.paths.model)


if __name__ == "__main__":
    run_stage(main)
