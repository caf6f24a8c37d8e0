"""Stage prepare_captions: chest X-ray image-caption pairs, split by patient.

Composes each image's caption from its view, finding labels and, for covid images,
the clinical notes' first sentence about the radiograph (see cxrlab.captioning.data).

Inputs:  ``captioning.paths.{covid,nih}``; params ``captioning.prepare``.
Outputs: ``captioning.paths.data``: ``captions.csv`` (image, patient, source, caption,
         split) and ``images.npz`` (``images`` uint8 (N, S, S), ``image`` names).
"""

import logging
from pathlib import Path

from cxrlab.captioning.data import (
    build_caption_pairs,
    check_captions,
    load_pair_images,
    save_caption_data,
)
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("prepare_captions")


def main() -> None:
    """Build, check and save the pairs."""
    params = load_section("captioning")
    raw_dir = Path(params.paths.covid).parent
    pairs = build_caption_pairs(raw_dir, params.prepare)
    check_captions(pairs, "the caption table")
    images = load_pair_images(pairs, raw_dir, params.prepare.image_size)
    for split, rows in pairs.groupby("split"):
        log.info(
            "%s: %d images of %d patients, %d distinct captions",
            split, len(rows), rows["patient"].nunique(), rows["caption"].nunique(),
        )  # fmt: skip
    save_caption_data(params.paths.data, pairs, images)


if __name__ == "__main__":
    run_stage(main)
