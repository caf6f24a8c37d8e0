"""Stage evaluate_segmenter: full-resolution Dice, IoU and HD95 per image, split and subgroup.

Every kept image is segmented at its own size (the network's output is resized back)
and scored against its mask, with the ignore region left out, both with and without
post-processing, so that its effect is measured.

Inputs:  ``segmentation.paths.model``, ``segmentation.paths.raw``,
         ``segmentation.paths.prepared`` (manifest.csv); params ``segmentation.eval``.
Outputs: ``segmentation.paths.eval_live`` (dvclive metrics.json: per split, and per sex,
         age band and view on test); ``segmentation.paths.per_image`` (per-image scores);
         ``paths.figures.dice_distribution`` (DVC plot); ``paths.figures.overlays``
         and ``paths.figures.dice_by_group``.
"""

import logging

import pandas as pd
from dvclive import Live

from cxrlab.core.utils import seed_everything, write_csv
from cxrlab.params import load_section
from cxrlab.segmentation.data import read_manifest
from cxrlab.segmentation.evaluate import age_band, score_images, summarise
from cxrlab.segmentation.figures import dice_by_group_figure, overlay_figure, pick_cases
from cxrlab.segmentation.model import full_size_predictor, load_segmenter
from cxrlab.stage import run_stage

log = logging.getLogger("evaluate_segmenter")
SCORES = ["dice", "iou", "hd95_px"]
GROUPS = ["sex", "age_band", "view"]


def main() -> None:
    """Score every kept image, then write metrics, per-image tables and figures."""
    params = load_section("segmentation")
    paths, cfg = params.paths, params.eval
    seed_everything(params.train.seed)
    model, meta = load_segmenter(paths.model)
    predict = full_size_predictor(model, meta, cfg)
    manifest = read_manifest(paths.prepared)
    kept = manifest[manifest.status == "kept"]
    post = cfg.postprocess
    scores = score_images(predict, kept, paths.raw, post.keep, post.fill_holes)
    scores["age_band"] = age_band(scores.age, cfg.age_bands)
    scores["sex"] = scores.sex.fillna("unknown")
    test = scores[scores.split == "test"]

    summary = _log_scores(paths.eval_live, scores, test)

    write_csv(paths.per_image, scores.drop(columns=["status", "reason"]))
    figures = paths.figures
    ranked = test.sort_values("dice").reset_index(drop=True)
    ranked["quantile"] = (ranked.index + 0.5) / len(ranked)
    write_csv(figures.dice_distribution, ranked[["quantile", "dice", "dice_raw"]])
    cases = pick_cases(test, cfg.overlay_cases)
    overlay_figure(cases, paths.raw, predict, figures.overlays)
    dice_by_group_figure(test, GROUPS, figures.dice_by_group)
    log.info("test (%d images): Dice %.4f, IoU %.4f, HD95 %.1f px",
             *(summary[k] for k in ("n", "dice", "iou", "hd95_px")))  # fmt: skip


def _log_scores(directory: str, scores: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Per-split means (with, without post-processing), test means per subgroup: dvclive.

    Returns the test split's summary.
    """
    with Live(dir=directory, dvcyaml=False, save_dvc_exp=False) as live:
        for split, part in scores.groupby("split"):
            for key, value in summarise(part, SCORES).items():
                live.log_metric(f"{split}/{key}", value, plot=False)
            raw = summarise(part, [f"{s}_raw" for s in SCORES])
            for key in SCORES:
                live.log_metric(f"{split}/without_postprocess/{key}", raw[f"{key}_raw"], plot=False)
        for column in GROUPS:
            for name, part in test.groupby(column):
                for key, value in summarise(part, SCORES).items():
                    live.log_metric(f"test_by_{column}/{name}/{key}", value, plot=False)
        return live.summary["test"]


if __name__ == "__main__":
    run_stage(main)
