"""The cohort database: every cohort source of the mirror in one SQLite file.

Each source is read into tidy tables (patients, studies, images, findings,
measurements) by one ``read_*`` function; :func:`build_database` checks the keys
between them and writes the file atomically. The schema and example queries are
documented in ``docs/cohort_db.md``.

Ids are namespaced by dataset (``nih_cxr14_sample:5425``), so sources never collide.
"""

from __future__ import annotations

import ast
import logging
import re
import sqlite3
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.core.errors import DataError
from cxrlab.core.utils import atomic_path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE datasets (
    dataset TEXT PRIMARY KEY,           -- e.g. covid_lungseg, jsrt
    source TEXT NOT NULL,               -- folder of the mirror it came from
    description TEXT
);
CREATE TABLE patients (
    patient_id TEXT PRIMARY KEY,        -- '<dataset>:<id in the source>'
    dataset TEXT NOT NULL REFERENCES datasets(dataset),
    source_patient_id TEXT NOT NULL,
    sex TEXT CHECK (sex IN ('M', 'F')), -- NULL when unknown
    birth_date TEXT                     -- ISO date, where the source gives one
);
CREATE TABLE studies (
    study_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    study_date TEXT,                    -- ISO date, or NULL
    age_years REAL,                     -- age at the study
    modality TEXT,                      -- DICOM Modality (CR, DX), NULL if not recorded
    view_position TEXT,                 -- DICOM ViewPosition (PA, AP, LL ...)
    view_label TEXT                     -- the source's own view name (e.g. 'AP Supine')
);
CREATE TABLE images (
    image_id TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies(study_id),
    file TEXT,                          -- path under data/raw; NULL: no image mirrored
    width INTEGER,
    height INTEGER,
    pixel_spacing_mm REAL,              -- of this file; NULL when unknown
    licence TEXT
);
CREATE TABLE findings (
    image_id TEXT NOT NULL REFERENCES images(image_id),
    finding TEXT NOT NULL,              -- lower case, e.g. 'cardiomegaly', 'no finding'
    source TEXT NOT NULL,               -- where the label comes from
    PRIMARY KEY (image_id, finding, source)
);
CREATE TABLE measurements (
    image_id TEXT NOT NULL REFERENCES images(image_id),
    name TEXT NOT NULL,                 -- e.g. cardiothoracic_ratio, right_lung_height
    value REAL NOT NULL,
    unit TEXT NOT NULL,                 -- ratio, px, mm, mm2, deg, or a clinical unit
    method TEXT NOT NULL,               -- landmarks, segmenter, clinical_record
    PRIMARY KEY (image_id, name, unit, method)
);
CREATE TABLE segmentation_scores (
    image_id TEXT PRIMARY KEY REFERENCES images(image_id),
    split TEXT NOT NULL,
    dice REAL, iou REAL, hd95_px REAL, dice_raw REAL
);
CREATE INDEX findings_by_name ON findings(finding);
CREATE INDEX measurements_by_name ON measurements(name, method);
CREATE INDEX studies_by_patient ON studies(patient_id);
CREATE INDEX images_by_study ON images(study_id);
"""

TABLES = ("datasets", "patients", "studies", "images", "findings", "measurements")
KEYS = {  # table -> (column, referenced table, referenced column)
    "patients": ("dataset", "datasets", "dataset"),
    "studies": ("patient_id", "patients", "patient_id"),
    "images": ("study_id", "studies", "study_id"),
    "findings": ("image_id", "images", "image_id"),
    "measurements": ("image_id", "images", "image_id"),
    "segmentation_scores": ("image_id", "images", "image_id"),
}

DATASETS = {  # dataset -> (mirror folder, description)
    "covid_lungseg": ("covid_lungseg", "COVID-19 chest X-rays with V7 Labs lung masks (ieee8023)"),
    "nih_cxr14_sample": ("nih_cxr14_sample", "NIH ChestX-ray14 sample, 512 px"),
    "iu_xray": ("iu_xray_reports", "Indiana University chest X-rays (Open-i): DICOM headers"),
    "jsrt": ("cxr_landmarks", "JSRT, landmark contours (Gaggion et al. 2022)"),
    "montgomery": ("cxr_landmarks", "Montgomery, landmark contours (Gaggion et al. 2022)"),
    "shenzhen": ("cxr_landmarks", "Shenzhen, landmark contours (Gaggion et al. 2022)"),
    "padchest": ("cxr_landmarks", "Padchest, landmark contours (Gaggion et al. 2022)"),
}

JSRT_SPACING_MM = 0.35
"""JSRT films are 2048 px at 0.175 mm; the landmarks' 1024 px frame is 0.35 mm a pixel."""


@dataclass
class Tables:
    """Rows for each table, as DataFrames; ``extend`` appends another source's."""

    frames: dict[str, list[pd.DataFrame]] = field(default_factory=dict)

    def add(self, table: str, frame: pd.DataFrame) -> None:
        """Append rows to ``table``."""
        self.frames.setdefault(table, []).append(frame)

    def extend(self, other: Tables) -> None:
        """Append every table of ``other``."""
        for table, frames in other.frames.items():
            self.frames.setdefault(table, []).extend(frames)

    def get(self, table: str) -> pd.DataFrame:
        """All rows of ``table`` (an empty frame when none)."""
        frames = [f for f in self.frames.get(table, []) if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _require(frame: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}.")


def _read_csv(path: Path, columns: Iterable[str], **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found: run the fetch_data stage first.")
    frame = pd.read_csv(path, **kwargs)
    _require(frame, columns, path)
    return frame


def _sex(values: pd.Series) -> pd.Series:
    sex = values.astype(str).str.strip().str.upper().str[:1]
    return sex.where(sex.isin(["M", "F"]), None)


def _findings(image_ids: pd.Series, labels: pd.Series, source: str) -> pd.DataFrame:
    """One row per (image, finding) from lists of label strings."""
    rows = pd.DataFrame({"image_id": image_ids.to_numpy(), "finding": labels.to_numpy()})
    rows = rows.explode("finding").dropna()
    rows["finding"] = rows.finding.astype(str).str.strip().str.lower()
    rows = rows[rows.finding != ""].drop_duplicates(["image_id", "finding"])
    return rows.assign(source=source)


def read_covid_lungseg(root: Path) -> Tables:
    """covid_lungseg: index.csv (one study per image) joined with metadata.csv."""
    index = _read_csv(
        root / "index.csv",
        ["image", "img_w", "img_h", "patientid", "sex", "age", "finding", "view", "license"],
    )
    meta = _read_csv(root / "metadata.csv", ["filename", "date"], low_memory=False)
    meta = meta.drop_duplicates("filename").set_index("filename")
    ds = "covid_lungseg"
    pid = ds + ":" + index.patientid.astype(str)
    iid = ds + ":" + index.image
    t = Tables()
    patients = pd.DataFrame(
        {
            "patient_id": pid,
            "dataset": ds,
            "source_patient_id": index.patientid.astype(str),
            "sex": _sex(index.sex),
        }
    )
    t.add("patients", patients.drop_duplicates("patient_id"))
    dates = pd.to_datetime(
        meta.reindex(index.image)["date"].to_numpy(), errors="coerce", format="mixed"
    )
    t.add(
        "studies",
        pd.DataFrame(
            {
                "study_id": iid,
                "patient_id": pid,
                "study_date": pd.Series(dates).dt.strftime("%Y-%m-%d").to_numpy(),
                "age_years": index.age,
                "modality": None,
                "view_position": index.view.str.split().str[0].str.upper(),
                "view_label": index.view,
            }
        ),
    )
    t.add(
        "images",
        pd.DataFrame(
            {
                "image_id": iid,
                "study_id": iid,
                "file": f"{ds}/images/" + index.image,
                "width": index.img_w,
                "height": index.img_h,
                "pixel_spacing_mm": None,
                "licence": index.license,
            }
        ),
    )
    t.add("findings", _findings(iid, index.finding.str.split("/"), "covid_lungseg index"))
    _add_clinical(t, iid, meta.reindex(index.image))
    return t


def _add_clinical(t: Tables, iid: pd.Series, clinical: pd.DataFrame) -> None:
    """covid_lungseg's clinical columns as measurements: values, and yes/no flags as 1/0."""
    for column, unit in (
        ("temperature", "degC"),
        ("pO2_saturation", "%"),
        ("leukocyte_count", "1e9/L"),
        ("lymphocyte_count", "1e9/L"),
    ):
        if column in clinical:
            values = pd.to_numeric(clinical[column], errors="coerce").to_numpy()
            rows = pd.DataFrame({"image_id": iid, "name": column, "value": values, "unit": unit})
            t.add("measurements", rows.dropna().assign(method="clinical_record"))
    for column in ("survival", "intubated", "went_icu", "needed_supplemental_O2"):
        if column in clinical:
            flags = clinical[column].astype(str).str.upper()
            rows = pd.DataFrame({"image_id": iid.to_numpy(), "flag": flags.to_numpy()})
            rows = rows[rows.flag.isin(["Y", "N"])]
            t.add(
                "measurements",
                pd.DataFrame(
                    {
                        "image_id": rows.image_id,
                        "name": column,
                        "value": (rows.flag == "Y").astype(float),
                        "unit": "yes=1",
                        "method": "clinical_record",
                    }
                ),
            )


def nih_spacing(index: pd.DataFrame, width: int = 512) -> pd.Series:
    """Pixel spacing (mm) of the mirrored 512 px NIH files: original spacing x width / 512."""
    return index["OriginalImagePixelSpacing[x"] * index["OriginalImage[Width"] / width


NIH_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "OriginalImagePixelSpacing[x",
]


def nih_index(root: str | Path) -> pd.DataFrame:
    """nih_cxr14_sample's ``index.csv``: the Data_Entry rows of the 512 px files, checked."""
    return _read_csv(Path(root) / "index.csv", NIH_COLUMNS)


def read_nih(root: Path) -> Tables:
    """nih_cxr14_sample: the Data_Entry rows of the 512 px sample."""
    index = nih_index(root)
    ds = "nih_cxr14_sample"
    pid = ds + ":" + index["Patient ID"].astype(str)
    sid = pid + ":" + index["Follow-up #"].astype(str)
    iid = ds + ":" + index["Image Index"]
    t = Tables()
    patients = pd.DataFrame(
        {
            "patient_id": pid,
            "dataset": ds,
            "source_patient_id": index["Patient ID"].astype(str),
            "sex": _sex(index["Patient Gender"]),
        }
    )
    t.add("patients", patients.drop_duplicates("patient_id"))
    t.add(
        "studies",
        pd.DataFrame(
            {
                "study_id": sid,
                "patient_id": pid,
                "study_date": None,
                "age_years": pd.to_numeric(index["Patient Age"], errors="coerce"),
                "modality": None,
                "view_position": index["View Position"],
                "view_label": index["View Position"],
            }
        ).drop_duplicates("study_id"),
    )
    t.add(
        "images",
        pd.DataFrame(
            {
                "image_id": iid,
                "study_id": sid,
                "file": f"{ds}/images/" + index["Image Index"],
                "width": 512,
                "height": 512,
                "pixel_spacing_mm": nih_spacing(index),
                "licence": "NIH Clinical Center, unrestricted",
            }
        ),
    )
    t.add("findings", _findings(iid, index["Finding Labels"].str.split("|"), "nih labels"))
    return t


def _dicom_date(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values.astype("Int64").astype(str), format="%Y%m%d", errors="coerce")


def _first_float(value: object) -> float:
    found = re.findall(r"[\d.]+", str(value))
    return float(found[0]) if found else float("nan")


IU_DICOM_COLUMNS = [
    "imageid", "Patient ID", "Patient's Sex", "Patient's Birth Date", "Study Date",
    "Study Instance UID", "Modality", "View Position", "Pixel Spacing", "Rows", "Columns",
]  # fmt: skip


def read_iu_xray(root: Path) -> Tables:
    """iu_xray_reports: DICOM headers per image, and MeSH findings from the reports."""
    dicom = _read_csv(root / "nlmcxr_dicom_metadata.csv.gz", IU_DICOM_COLUMNS, low_memory=False)
    dicom = dicom.drop_duplicates("imageid")
    ds = "iu_xray"
    pid = ds + ":" + dicom["Patient ID"].astype(str)
    sid = ds + ":" + dicom["Study Instance UID"].astype(str)
    iid = ds + ":" + dicom.imageid
    birth, study = _dicom_date(dicom["Patient's Birth Date"]), _dicom_date(dicom["Study Date"])
    t = Tables()
    t.add(
        "patients",
        pd.DataFrame(
            {
                "patient_id": pid,
                "dataset": ds,
                "source_patient_id": dicom["Patient ID"].astype(str),
                "sex": _sex(dicom["Patient's Sex"]),
                "birth_date": birth.dt.strftime("%Y-%m-%d"),
            }
        ).drop_duplicates("patient_id"),
    )
    age = (study - birth).dt.days / 365.25
    t.add(
        "studies",
        pd.DataFrame(
            {
                "study_id": sid,
                "patient_id": pid,
                "study_date": study.dt.strftime("%Y-%m-%d"),
                "age_years": age.where((age >= 0) & (age < 120)).round(1),
                "modality": dicom.Modality,
                "view_position": dicom["View Position"],
                "view_label": dicom["View Position"],
            }
        ).drop_duplicates("study_id"),
    )
    t.add(
        "images",
        pd.DataFrame(
            {
                "image_id": iid,
                "study_id": sid,
                "file": None,
                "width": dicom.Columns,
                "height": dicom.Rows,
                "pixel_spacing_mm": dicom["Pixel Spacing"].map(_first_float),
                "licence": "CC BY-NC-ND 4.0",
            }
        ),
    )
    mesh = read_iu_mesh(root / "NLMCXR_reports.tgz")
    mesh["image_id"] = ds + ":" + mesh.image
    mesh = mesh[mesh.image_id.isin(set(iid))]
    t.add("findings", _findings(mesh.image_id, mesh.terms, "iu report MeSH (major)"))
    return t


def read_iu_mesh(path: Path) -> pd.DataFrame:
    """Major MeSH terms per image id from the IU report archive (first term level only)."""
    if not path.is_file():
        raise DataError(f"{path} not found: run the fetch_data stage first.")
    rows = []
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.name.endswith(".xml"):
                continue
            tree = ET.parse(tar.extractfile(member))
            terms = [m.text.split("/")[0] for m in tree.iter("major") if m.text]
            for image in tree.iter("parentImage"):
                rows.append({"image": image.get("id"), "terms": terms})
    return pd.DataFrame(rows, columns=["image", "terms"])


def _conditions(text: object) -> list[str]:
    text = str(text).strip()
    if text.startswith("["):
        return list(ast.literal_eval(text))
    return [text]


def landmark_measurements(points: dict[str, np.ndarray]) -> dict[str, tuple[float, str]]:
    """Clinical measurements from one image's contours (1024 px frame).

    Args:
        points: (K, 2) x/y arrays for ``RL`` and ``LL`` (right and left lung), and
            optionally ``H`` (heart) and ``RCLA``/``LCLA`` (clavicles).

    Returns:
        name -> (value, unit). The cardiothoracic ratio is the heart's widest
        horizontal extent over the thorax's (outer lung edges). Clavicle angles are
        each clavicle's principal axis against the horizontal; their difference is a
        rotation check (a straight PA film has symmetric clavicles).
    """
    rl, ll = points["RL"], points["LL"]
    out: dict[str, tuple[float, str]] = {}
    thorax = max(rl[:, 0].max(), ll[:, 0].max()) - min(rl[:, 0].min(), ll[:, 0].min())
    out["thoracic_width"] = (float(thorax), "px")
    for side, lung in (("right", rl), ("left", ll)):
        out[f"{side}_lung_height"] = (float(np.ptp(lung[:, 1])), "px")
        out[f"{side}_lung_width"] = (float(np.ptp(lung[:, 0])), "px")
    if "H" in points:
        heart = float(np.ptp(points["H"][:, 0]))
        out["heart_width"] = (heart, "px")
        out["cardiothoracic_ratio"] = (heart / thorax, "ratio")
    angles = {}
    for side, key in (("right", "RCLA"), ("left", "LCLA")):
        if key in points:
            centred = points[key] - points[key].mean(0)
            direction = np.linalg.svd(centred, full_matrices=False)[2][0]
            angle = np.degrees(np.arctan2(abs(direction[1]), abs(direction[0])))
            angles[side] = float(angle)
            out[f"{side}_clavicle_angle"] = (angles[side], "deg")
    if len(angles) == 2:
        out["clavicle_angle_difference"] = (abs(angles["right"] - angles["left"]), "deg")
    return out


def read_landmarks(root: Path) -> Tables:
    """cxr_landmarks: clinical.csv (one patient and study per image) and contour measurements."""
    clinical = _read_csv(root / "clinical.csv", ["File", "Dataset", "Sex", "Age", "Condition"])
    t = Tables()
    ds = clinical.Dataset.str.lower()
    stem = clinical.File.str.rsplit(".", n=1).str[0]
    iid = ds + ":" + stem
    t.add(
        "patients",
        pd.DataFrame(
            {"patient_id": iid, "dataset": ds, "source_patient_id": stem, "sex": _sex(clinical.Sex)}
        ),
    )
    t.add(
        "studies",
        pd.DataFrame(
            {
                "study_id": iid,
                "patient_id": iid,
                "study_date": None,
                "age_years": pd.to_numeric(
                    clinical.Age.astype(str).str.extract(r"(\d+)")[0], errors="coerce"
                ),
                "modality": None,
                "view_position": "PA",
                "view_label": "PA",
            }
        ),
    )
    spacing = np.where(ds == "jsrt", JSRT_SPACING_MM, np.nan)
    t.add(
        "images",
        pd.DataFrame(
            {
                "image_id": iid,
                "study_id": iid,
                "file": None,
                "width": 1024,
                "height": 1024,
                "pixel_spacing_mm": spacing,
                "licence": "see cxr_landmarks/bibtex.bib",
            }
        ),
    )
    conditions = clinical.Condition.map(_conditions)
    t.add("findings", _findings(iid, conditions, "cxr_landmarks clinical.csv"))
    t.add("measurements", _landmark_rows(root / "landmarks", iid, stem, spacing))
    return t


def _landmark_rows(folder: Path, iid, stem, spacing) -> pd.DataFrame:
    """Contour measurements per image with both lungs outlined, in px and (JSRT) mm."""
    rows = []
    for image_id, file_stem, mm in zip(iid, stem, spacing, strict=True):
        points = {
            key: np.load(folder / key / f"{file_stem}.npy")
            for key in ("RL", "LL", "H", "RCLA", "LCLA")
            if (folder / key / f"{file_stem}.npy").is_file()
        }
        if "RL" not in points or "LL" not in points:
            continue
        for name, (value, unit) in landmark_measurements(points).items():
            rows.append((image_id, name, value, unit))
            if unit == "px" and not np.isnan(mm):
                rows.append((image_id, name, value * mm, "mm"))
    frame = pd.DataFrame(rows, columns=["image_id", "name", "value", "unit"])
    return frame.assign(method="landmarks")


def segmenter_rows(measurements: pd.DataFrame) -> pd.DataFrame:
    """Long-format measurement rows from the measure_nih_lungs CSV (one row per image)."""
    _require(measurements, ["image_id"], Path("nih lung measurements"))
    long = measurements.melt(id_vars="image_id", var_name="column").dropna()
    long = long[long.column != "pixel_spacing_mm"]
    unit = long.column.str.extract(r"_(px|mm2|mm)$")[0]
    return pd.DataFrame(
        {
            "image_id": long.image_id,
            "name": long.column.str.replace(r"_(px|mm2|mm)$", "", regex=True),
            "value": long.value.astype(float),
            "unit": unit,
            "method": "segmenter",
        }
    )


def check_keys(tables: dict[str, pd.DataFrame]) -> None:
    """Every reference must name an existing row.

    Raises:
        DataError: Naming the first unknown id, its table and how many rows have one.
    """
    for table, (column, ref_table, ref_column) in KEYS.items():
        frame = tables.get(table)
        if frame is None or not len(frame):
            continue
        known = set(tables[ref_table][ref_column])
        unknown = frame.loc[~frame[column].isin(known), column]
        if len(unknown):
            raise DataError(
                f"{table} has {len(unknown)} row(s) with a {column} that {ref_table} does not "
                f"hold, e.g. '{unknown.iloc[0]}'."
            )


def build_database(
    path: str | Path, tables: Tables, scores: pd.DataFrame | None = None
) -> dict[str, int]:
    """Check the keys and write the SQLite database at ``path`` atomically.

    Args:
        path: The ``.sqlite`` file to write.
        tables: Rows from the ``read_*`` functions (and :func:`segmenter_rows`).
        scores: Per-image segmentation scores with ``image_id``, ``split``, ``dice`` ...

    Returns:
        Row counts per table.
    """
    frames = {name: tables.get(name) for name in TABLES}
    used = sorted(frames["patients"].dataset.unique())
    unknown = [d for d in used if d not in DATASETS]
    if unknown:
        raise DataError(f"dataset '{unknown[0]}' is not described in cohort_db.DATASETS.")
    frames["datasets"] = pd.DataFrame(
        [(d, *DATASETS[d]) for d in used], columns=["dataset", "source", "description"]
    )
    for name, key in (("patients", "patient_id"), ("studies", "study_id"), ("images", "image_id")):
        dupes = frames[name][key][frames[name][key].duplicated()]
        if len(dupes):
            raise DataError(f"{name} has duplicate id '{dupes.iloc[0]}'.")
    if scores is not None:
        frames["segmentation_scores"] = scores
    check_keys(frames)
    counts = {}
    with atomic_path(path) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.execute("PRAGMA foreign_keys = ON")
            con.executescript(SCHEMA)
            for name, frame in frames.items():
                columns = [r[1] for r in con.execute(f"PRAGMA table_info({name})")]
                frame.reindex(columns=columns).to_sql(name, con, if_exists="append", index=False)
                counts[name] = len(frame)
            con.commit()
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            raise DataError(
                f"the cohort database rejected a row of {name}: {exc.__cause__ or exc}."
            ) from exc
        finally:
            con.close()
    log.info("wrote %s: %s", path, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts
