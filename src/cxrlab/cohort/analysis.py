"""Cohort analysis: SQL queries on the cohort database and the statistics built on them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cxrlab.core.errors import DataError
from cxrlab.segmentation.evaluate import age_band

DEMOGRAPHICS = """
SELECT p.dataset, p.patient_id, p.sex, s.study_id, s.age_years
FROM studies s JOIN patients p USING (patient_id)
"""

VIEWS = """
SELECT p.dataset, COALESCE(s.view_position, 'unknown') AS view, COUNT(*) AS images
FROM images i JOIN studies s USING (study_id) JOIN patients p USING (patient_id)
GROUP BY 1, 2 ORDER BY 1, 3 DESC
"""

FINDINGS = """
SELECT p.dataset, f.finding, COUNT(DISTINCT f.image_id) AS images
FROM findings f JOIN images i USING (image_id) JOIN studies s USING (study_id)
JOIN patients p USING (patient_id)
GROUP BY 1, 2 ORDER BY 3 DESC
"""

CTR = """
SELECT m.image_id, m.value AS ctr, p.dataset,
       EXISTS (SELECT 1 FROM findings f WHERE f.image_id = m.image_id AND f.finding = :finding)
         AS has_finding
FROM measurements m JOIN images i USING (image_id) JOIN studies s USING (study_id)
JOIN patients p USING (patient_id)
WHERE m.name = 'cardiothoracic_ratio' AND m.method = 'landmarks'
"""

LUNG_AREA = """
SELECT m.image_id, m.value / 100.0 AS lung_area_cm2, p.sex, s.age_years, s.view_position
FROM measurements m JOIN images i USING (image_id) JOIN studies s USING (study_id)
JOIN patients p USING (patient_id)
WHERE m.name = 'area' AND m.unit = 'mm2' AND m.method = 'segmenter'
"""

DICE = """
SELECT g.image_id, g.split, g.dice, g.iou, g.hd95_px, COALESCE(p.sex, 'unknown') AS sex,
       s.age_years, s.view_label AS view
FROM segmentation_scores g JOIN images i USING (image_id) JOIN studies s USING (study_id)
JOIN patients p USING (patient_id)
"""


def query(database: str | Path, sql: str, **params: object) -> pd.DataFrame:
    """Run one query against the cohort database.

    Raises:
        DataError: If the database is missing.
    """
    if not Path(database).is_file():
        raise DataError(f"{database} not found: run the build_cohort_db stage first.")
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as con:
        return pd.read_sql_query(sql, con, params=params)


def compare_groups(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Two-sided Mann-Whitney U test of ``a`` vs ``b`` with medians and effect size.

    The effect is the rank-biserial correlation, ``2 U / (n_a n_b) - 1``: +1 when
    every value of ``a`` exceeds every value of ``b``.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:  # nothing to compare: every statistic is NaN
        keys = ("median_a", "median_b", "u", "p_value", "rank_biserial")
        return {"n_a": len(a), "n_b": len(b)} | dict.fromkeys(keys, float("nan"))
    result = stats.mannwhitneyu(a, b, alternative="two-sided")
    return {
        "n_a": len(a),
        "n_b": len(b),
        "median_a": float(np.median(a)),
        "median_b": float(np.median(b)),
        "u": float(result.statistic),
        "p_value": float(result.pvalue),
        "rank_biserial": float(2 * result.statistic / (len(a) * len(b)) - 1),
    }


def demographics(database: str | Path) -> pd.DataFrame:
    """Per dataset: patients, studies, share female (of known sex), age quartiles."""
    rows = query(database, DEMOGRAPHICS)
    per_patient = rows.drop_duplicates("patient_id")
    out = pd.DataFrame(
        {
            "patients": per_patient.groupby("dataset").size(),
            "studies": rows.groupby("dataset").size(),
            "sex_known": per_patient.groupby("dataset").sex.count(),
            "female_share": per_patient.groupby("dataset").sex.apply(
                lambda s: (s == "F").sum() / s.notna().sum() if s.notna().any() else np.nan
            ),
            "age_known": rows.groupby("dataset").age_years.count(),
            "age_median": rows.groupby("dataset").age_years.median(),
            "age_q1": rows.groupby("dataset").age_years.quantile(0.25),
            "age_q3": rows.groupby("dataset").age_years.quantile(0.75),
        }
    )
    return out.reset_index()


def dice_by_subgroup(database: str | Path, split: str, edges: list[int]) -> pd.DataFrame:
    """Mean Dice, IoU and HD95 of one split per sex, age band and view (long format)."""
    scores = query(database, DICE)
    scores = scores[scores.split == split].assign(age_band=lambda d: age_band(d.age_years, edges))
    parts = []
    for column in ("sex", "age_band", "view"):
        grouped = scores.groupby(column)[["dice", "iou", "hd95_px"]]
        summary = grouped.mean().join(grouped.size().rename("n")).reset_index()
        parts.append(summary.rename(columns={column: "group"}).assign(by=column))
    return pd.concat(parts, ignore_index=True)[["by", "group", "n", "dice", "iou", "hd95_px"]]


def ctr_by_condition(
    database: str | Path, finding: str
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, int]]:
    """Cardiothoracic ratios of images with and without ``finding``, and their test.

    Returns:
        The two groups' values, the :func:`compare_groups` result, and image counts
        per ``group:dataset`` (the groups can come from different datasets).
    """
    ctr = query(database, CTR, finding=finding)
    ctr["group"] = np.where(ctr.has_finding == 1, finding, "others")
    groups = {g: ctr.loc[ctr.group == g, "ctr"].to_numpy() for g in (finding, "others")}
    sources = {f"{g}:{d}": int(n) for (g, d), n in ctr.groupby(["group", "dataset"]).size().items()}
    return groups, compare_groups(*groups.values()), sources


def lung_area_by_sex(database: str | Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Segmenter-derived lung areas (cm²) of female and male patients, and their test."""
    area = query(database, LUNG_AREA)
    groups = {s: area.loc[area.sex == s, "lung_area_cm2"].to_numpy() for s in ("F", "M")}
    return groups, compare_groups(*groups.values())
