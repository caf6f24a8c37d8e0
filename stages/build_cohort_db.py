"""Stage build_cohort_db: every cohort source of the mirror in one SQLite database.

Inputs:  the folders in ``cohort.paths.sources`` (covid_lungseg index/metadata, the NIH
         sample index, IU X-ray DICOM headers and reports, the landmark datasets'
         clinical.csv and contours); ``segmentation.paths.per_image`` (Dice per image)
         and ``segmentation.paths.nih_measurements`` (segmenter lung measurements).
Outputs: ``cohort.paths.database`` (schema in docs/cohort_db.md) and
         ``cohort.paths.build_live`` (dvclive: row counts).
"""

import logging
from pathlib import Path

import pandas as pd

from cxrlab.cohort import database as cohort_db
from cxrlab.core.errors import DataError
from cxrlab.core.live import write_metrics
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("build_cohort_db")

READERS = {
    "covid_lungseg": cohort_db.read_covid_lungseg,
    "nih_cxr14_sample": cohort_db.read_nih,
    "iu_xray_reports": cohort_db.read_iu_xray,
    "cxr_landmarks": cohort_db.read_landmarks,
}


def main() -> None:
    """Read each source, add the segmenter's outputs, check keys, write the database."""
    paths = load_section("cohort").paths
    seg = load_section("segmentation").paths
    tables = cohort_db.Tables()
    for name, folder in paths.sources.items():
        if name not in READERS:
            raise DataError(f"cohort.paths.sources.{name}: no reader; known: {sorted(READERS)}.")
        tables.extend(READERS[name](Path(folder)))
        log.info("read %s", name)
    tables.add("measurements", cohort_db.segmenter_rows(pd.read_csv(seg.nih_measurements)))
    scores = pd.read_csv(seg.per_image)
    scores["image_id"] = "covid_lungseg:" + scores.image
    counts = cohort_db.build_database(
        paths.database, tables, scores[["image_id", "split", "dice", "iou", "hd95_px", "dice_raw"]]
    )
    write_metrics(paths.build_live, {"rows": counts})


if __name__ == "__main__":
    run_stage(main)
