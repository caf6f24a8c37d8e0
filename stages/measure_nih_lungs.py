"""Stage measure_nih_lungs: run the trained segmenter on the external NIH sample and measure.

The NIH images were never seen in training. Their pixel spacing is known, so lung
area, heights and widths come out in mm as well as pixels.

Inputs:  ``segmentation.paths.model``, ``segmentation.paths.nih`` (images/, index.csv);
         params ``segmentation.eval`` (threshold, post-processing).
Outputs: ``segmentation.paths.nih_measurements`` (one row per image) and
         ``segmentation.paths.figures.nih_overlays``.
"""

import logging
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from cxrlab.cohort.database import nih_index, nih_spacing
from cxrlab.core.figures import BAD, Panel, save_gallery
from cxrlab.core.utils import seed_everything, write_csv
from cxrlab.params import load_section
from cxrlab.segmentation.data import read_gray
from cxrlab.segmentation.evaluate import lung_measurements, postprocess
from cxrlab.segmentation.model import full_size_predictor, load_segmenter
from cxrlab.stage import run_stage

log = logging.getLogger("measure_nih_lungs")


def main() -> None:
    """Segment each NIH image at full size and write its lung measurements."""
    params = load_section("segmentation")
    paths, cfg = params.paths, params.eval
    seed_everything(params.train.seed)
    model, meta = load_segmenter(paths.model)
    predict = full_size_predictor(model, meta, cfg)
    index = nih_index(paths.nih)
    spacing = nih_spacing(index)
    rows, panels = [], []
    for name, mm in tqdm(list(zip(index["Image Index"], spacing, strict=True)), desc="NIH"):
        image = read_gray(Path(paths.nih) / "images" / name)
        raw = predict(image)
        mask = postprocess(raw, cfg.postprocess.keep, cfg.postprocess.fill_holes)
        rows.append(
            {"image_id": f"nih_cxr14_sample:{name}", "pixel_spacing_mm": mm}
            | lung_measurements(mask, mm)
        )
        if len(panels) < 12:
            panels.append(Panel(image, name, contours=[(mask, BAD)]))
    table = pd.DataFrame(rows)
    write_csv(paths.nih_measurements, table)
    save_gallery(
        [panels[:6], panels[6:]],
        paths.figures.nih_overlays,
        title="External NIH images: predicted lungs (not seen in training, no ground truth)",
        panel_size=2.2,
    )
    log.info(
        "measured %d NIH images; median lung area %.0f mm²", len(table), table.area_mm2.median()
    )


if __name__ == "__main__":
    run_stage(main)
