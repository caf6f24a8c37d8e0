import sqlite3

import numpy as np
import pandas as pd
import pytest

from cxrlab.cohort import database as cohort_db
from cxrlab.cohort.analysis import compare_groups, dice_by_subgroup, query
from cxrlab.core.errors import DataError
from tests.lungseg_fixtures import write_covid, write_iu, write_landmarks, write_nih


@pytest.fixture
def sources(tmp_path):
    return {
        "covid": write_covid(tmp_path / "covid_lungseg", n=6),
        "nih": write_nih(tmp_path / "nih"),
        "iu": write_iu(tmp_path / "iu"),
        "landmarks": write_landmarks(tmp_path / "landmarks"),
    }


def all_tables(sources):
    tables = cohort_db.Tables()
    tables.extend(cohort_db.read_covid_lungseg(sources["covid"]))
    tables.extend(cohort_db.read_nih(sources["nih"]))
    tables.extend(cohort_db.read_iu_xray(sources["iu"]))
    tables.extend(cohort_db.read_landmarks(sources["landmarks"]))
    return tables


def test_landmark_measurements_on_rectangles():
    def rect(x0, x1, y0, y1):
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)

    m = cohort_db.landmark_measurements(
        {
            "RL": rect(100, 400, 200, 800),
            "LL": rect(600, 900, 250, 800),
            "H": rect(350, 750, 500, 800),
            "RCLA": np.array([[300.0, 150], [500, 150]]),  # flat
            "LCLA": np.array([[600.0, 200], [800, 200 - 200 * np.tan(np.radians(10))]]),
        }
    )
    assert m["cardiothoracic_ratio"] == (pytest.approx(400 / 800), "ratio")
    assert m["left_lung_height"] == (550, "px") and m["right_lung_width"] == (300, "px")
    assert m["right_clavicle_angle"][0] == pytest.approx(0, abs=1e-6)
    assert m["left_clavicle_angle"][0] == pytest.approx(10)
    assert m["clavicle_angle_difference"][0] == pytest.approx(10)


def test_database_holds_every_source_with_checked_keys(sources, tmp_path):
    db = tmp_path / "cohort.sqlite"
    counts = cohort_db.build_database(db, all_tables(sources))
    # covid 3 patients (2 images each), nih 4, iu 1, landmarks 3 (one per image)
    assert counts["patients"] == 3 + 4 + 1 + 3
    assert counts["images"] == 6 + 4 + 2 + 3
    con = sqlite3.connect(db)
    rows = dict(con.execute("SELECT dataset, COUNT(*) FROM patients GROUP BY 1").fetchall())
    assert rows == {
        "covid_lungseg": 3,
        "nih_cxr14_sample": 4,
        "iu_xray": 1,
        "jsrt": 2,
        "padchest": 1,
    }
    iu_age = con.execute("SELECT age_years FROM studies WHERE study_id = 'iu_xray:1.2'").fetchone()
    assert iu_age[0] == pytest.approx(55.6, abs=0.1)  # 1955-08-20 to 2011-03-28
    spacing = con.execute(
        "SELECT pixel_spacing_mm FROM images WHERE image_id = 'nih_cxr14_sample:00000000_000.png'"
    ).fetchone()[0]
    assert spacing == pytest.approx(0.2 * 2048 / 512)
    findings = {f for (f,) in con.execute("SELECT finding FROM findings")}
    assert {"cardiomegaly", "effusion", "no finding", "covid-19", "scoliosis", "nodule"} <= findings
    ctr_mm = con.execute(
        "SELECT COUNT(*) FROM measurements WHERE name = 'thoracic_width' AND unit = 'mm'"
    ).fetchone()[0]
    assert ctr_mm == 2  # spacing known for JSRT only
    icu = con.execute("SELECT COUNT(*) FROM measurements WHERE name = 'went_icu'").fetchone()[0]
    assert icu == 6


def test_an_unknown_patient_id_is_a_clear_error_and_nothing_is_written(sources, tmp_path):
    tables = all_tables(sources)
    tables.add(
        "studies",
        pd.DataFrame([{"study_id": "x:1", "patient_id": "covid_lungseg:999"}]),
    )
    db = tmp_path / "cohort.sqlite"
    with pytest.raises(DataError, match="studies has 1 row.*patient_id.*'covid_lungseg:999'"):
        cohort_db.build_database(db, tables)
    assert not db.exists() and not list(tmp_path.glob(".cohort.sqlite*"))


def test_segmenter_rows_and_scores_join_the_images(sources, tmp_path):
    tables = all_tables(sources)
    measured = pd.DataFrame(
        {"image_id": ["nih_cxr14_sample:00000000_000.png"], "pixel_spacing_mm": [0.8],
         "area_px": [1000.0], "area_mm2": [640.0], "right_lung_height_mm": [np.nan]}
    )  # fmt: skip
    tables.add("measurements", cohort_db.segmenter_rows(measured))
    scores = pd.DataFrame(
        {"image_id": [f"covid_lungseg:img{i:02d}.png" for i in range(6)], "split": "test",
         "dice": np.linspace(0.9, 0.95, 6), "iou": 0.8, "hd95_px": 3.0, "dice_raw": 0.9}
    )  # fmt: skip
    db = tmp_path / "cohort.sqlite"
    cohort_db.build_database(db, tables, scores)
    area = query(db, "SELECT unit, value FROM measurements WHERE method = 'segmenter'")
    assert sorted(area.unit) == ["mm2", "px"]
    by = dice_by_subgroup(db, "test", [40, 60]).set_index(["by", "group"])
    assert by.loc[("sex", "M"), "n"] + by.loc[("sex", "F"), "n"] == 6
    assert by.loc[("view", "AP Supine"), "n"] == 2

    scores.loc[0, "image_id"] = "covid_lungseg:nope.png"
    with pytest.raises(DataError, match="segmentation_scores.*'covid_lungseg:nope.png'"):
        cohort_db.build_database(tmp_path / "other.sqlite", tables, scores)


def test_a_missing_source_column_is_named(sources):
    index = pd.read_csv(sources["nih"] / "index.csv").drop(columns=["Patient ID"])
    index.to_csv(sources["nih"] / "index.csv", index=False)
    with pytest.raises(DataError, match="lacks the column.*Patient ID"):
        cohort_db.read_nih(sources["nih"])


def test_compare_groups_agrees_with_a_hand_computed_case():
    out = compare_groups(np.array([5.0, 6, 7]), np.array([1.0, 2]))
    assert out["u"] == 6 and out["rank_biserial"] == 1.0
    assert out["median_a"] == 6 and out["n_b"] == 2
    assert out["p_value"] == pytest.approx(0.2)  # exact two-sided test, 2 / C(5, 2)
