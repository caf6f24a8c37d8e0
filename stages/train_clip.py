"""Stage train_clip: the CLIP that clip_label labels PneumoniaMNIST with (cpu profile).

``clip.recipe`` picks it:

- ``supervised`` (default): a small CLIP trained from scratch on PneumoniaMNIST's train
  split, its captions built from each image's label through ``clip.train.captions``. Its
  labels are supervised, not zero-shot (the gpu profile's BiomedCLIP is).
- ``lit``: EfficientNet-Lite0 (ImageNet) and MiniLM-L6, both locked, with new heads trained
  on the chest X-ray caption pairs' train split (covid and NIH images, none of
  PneumoniaMNIST), each shrunk to ``clip.lit.source_size`` px first. Its labels are
  zero-shot.

Checkpoints every epoch to ``clip.paths.checkpoint`` and resumes from it.

Inputs:  ``clip.paths.data`` (PneumoniaMNIST npz), ``captioning.paths.data`` (the caption
         pairs), the fetched EfficientNet-Lite0 weights; params ``clip.recipe``,
         ``clip.arch``, ``clip.train``, ``clip.lit``.
Outputs: ``clip.paths.model`` in open_clip's ``local-dir:`` layout;
         ``clip.paths.train_live`` (dvclive: loss, lr and temperature per epoch).
"""

import logging

import numpy as np

from cxrlab.captioning.data import load_caption_data, split_of
from cxrlab.captioning.model import minilm_dir
from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.core.live import epoch_logger
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import seed_everything
from cxrlab.labeling.model import build_clip, build_lit, save_clip
from cxrlab.labeling.train import caption_classes, train_clip
from cxrlab.params import load_section
from cxrlab.segmentation.data import resize
from cxrlab.stage import run_stage

log = logging.getLogger("train_clip")


def main() -> None:
    """Build the CLIP the recipe names, train it and save it."""
    params = load_section("clip")
    if params.recipe == "lit":
        cfg = params.lit.train
        seed_everything(cfg.seed)
        bundle = build_lit(params.lit, minilm_dir())
        pairs, images = load_caption_data(load_section("captioning").paths.data)
        images, texts = split_of(pairs, images, "train")
        small = np.stack([resize(image, params.lit.source_size, "box") for image in images])
        labels, class_names, captions = caption_classes(texts)
        log.info("training the LiT heads on %d caption pairs (%d distinct captions), %d px",
                 len(texts), len(class_names), params.lit.source_size)  # fmt: skip
    else:
        cfg = params.train
        seed_everything(cfg.seed)
        bundle = build_clip(params.arch)
        train = load_pneumoniamnist(params.paths.data)["train"]
        small, labels, class_names, captions = train.images, train.labels, list(CLASS_NAMES), None
        log.info("training CLIP on %d train images", len(train))
    x = bundle.images_to_tensor(small)
    with epoch_logger(params.paths.train_live) as (_, log_epoch):
        train_clip(bundle, x, labels, class_names, cfg, params.paths.checkpoint, log_epoch,
                   captions)  # fmt: skip
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    save_clip(bundle, params.paths.model)
    log.info("saved %s", params.paths.model)


if __name__ == "__main__":
    run_stage(main)
