"""Stage prepare_lungseg: screen covid_lungseg, split it by patient, resize it for training.

Inputs:  ``segmentation.paths.raw`` (images/, masks/, index.csv); params
         ``segmentation.prepare``.
Outputs: ``segmentation.paths.prepared``: ``arrays.npz`` (images and coded masks at
         the input size, kept pairs only) and ``manifest.csv`` (every image with its
         split, status and the reason it was dropped);
         ``segmentation.paths.prepare_live`` (dvclive: counts per split and per reason).
"""

import logging

from cxrlab.core.live import write_metrics
from cxrlab.params import load_section
from cxrlab.segmentation.data import (
    prepare_arrays,
    read_index,
    save_prepared,
    screen,
    split_by_patient,
)
from cxrlab.stage import run_stage

log = logging.getLogger("prepare_lungseg")


def main() -> None:
    """Screen, split and resize; write the arrays, the manifest and the counts."""
    params = load_section("segmentation")
    paths, cfg = params.paths, params.prepare
    index = screen(read_index(paths.raw), paths.raw, cfg.min_lung_frac)
    kept = index[index.status == "kept"].copy()
    kept["split"] = split_by_patient(kept.patientid, cfg.fractions, cfg.seed)
    index = index.join(kept["split"])
    images, masks = prepare_arrays(kept, paths.raw, cfg.image_size)

    save_prepared(paths.prepared, images, masks, index)

    counts = {
        "images": len(index),
        "kept": len(kept),
        "dropped": int((index.status == "dropped").sum()),
        "dropped_by_reason": index[index.status == "dropped"].reason.value_counts().to_dict(),
        "with_ignore_region": int((masks == 2).any((1, 2)).sum()),
    }
    for name, part in kept.groupby("split"):
        counts[name] = {"images": len(part), "patients": int(part.patientid.nunique())}
    write_metrics(paths.prepare_live, counts)
    log.info(
        "kept %d of %d images; %s",
        len(kept),
        len(index),
        ", ".join(f"{s} {counts[s]['images']}" for s in cfg.fractions),
    )


if __name__ == "__main__":
    run_stage(main)
