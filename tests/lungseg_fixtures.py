"""Tiny synthetic stand-ins for the segmentation and cohort sources of the mirror."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def lung_pair(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A dark-lung X-ray-like image and its raw mask (255 lungs, 127 a small ignore patch)."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), np.uint8)
    for cx in (0.3, 0.7):
        cx = cx + rng.uniform(-0.03, 0.03)
        inside = ((xx / w - cx) / 0.15) ** 2 + ((yy / h - 0.5) / 0.3) ** 2 < 1
        mask[inside] = 255
    image = np.clip(rng.normal(170, 20, (h, w)) - (mask > 0) * 100, 0, 255).astype(np.uint8)
    mask[int(0.45 * h) : int(0.5 * h), int(0.25 * w) : int(0.3 * w)] = 127
    return image, mask


def write_covid(root: Path, n: int = 16, seed: int = 0, size: int = 64) -> Path:
    """A covid_lungseg-like folder: images/, masks/, index.csv and metadata.csv."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n):
        image, mask = lung_pair(rng, (size, size + 8 * (i % 2)))
        name = f"img{i:02d}.png"
        pil = Image.fromarray(image)
        (pil.convert("RGB") if i % 3 == 0 else pil).save(root / "images" / name)
        Image.fromarray(mask).save(root / "masks" / f"img{i:02d}_mask.png")
        rows.append(
            {
                "image": name,
                "mask": f"img{i:02d}_mask.png",
                "img_w": image.shape[1],
                "img_h": image.shape[0],
                "patientid": i // 2,
                "sex": "MF"[(i // 2) % 2],
                "age": 30 + 3 * i if i % 4 else None,
                "finding": "COVID-19",
                "view": ["PA", "AP", "AP Supine"][i % 3],
                "license": "CC BY 4.0",
            }
        )
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    meta = pd.DataFrame({"filename": [r["image"] for r in rows], "date": "2020-03-01"})
    meta["went_icu"] = ["Y", "N"] * (n // 2)
    meta.to_csv(root / "metadata.csv", index=False)
    return root


def write_nih(root: Path, n: int = 4, seed: int = 1) -> Path:
    """A nih_cxr14_sample-like folder with 64 px 'originals' of 2048 px at 0.2 mm."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        image, _ = lung_pair(rng, (64, 64))
        name = f"{i:08d}_000.png"
        Image.fromarray(image).save(root / "images" / name)
        rows.append(
            {
                "Image Index": name,
                "Finding Labels": "Cardiomegaly|Effusion" if i % 2 else "No Finding",
                "Follow-up #": 0,
                "Patient ID": i,
                "Patient Age": 40 + i,
                "Patient Gender": "MF"[i % 2],
                "View Position": "PA",
                "OriginalImage[Width": 2048,
                "Height]": 2048,
                "OriginalImagePixelSpacing[x": 0.2,
                "y]": 0.2,
            }
        )
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root


def write_landmarks(root: Path) -> Path:
    """Two JSRT and one Padchest image with rectangle lungs and heart (1024 px frame)."""

    def rect(x0, x1, y0, y1):
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)

    files = {"JPCLN001.png": "JSRT", "JPCLN002.png": "JSRT", "pad1.png": "Padchest"}
    for key in ("RL", "LL", "H", "RCLA", "LCLA"):
        (root / "landmarks" / key).mkdir(parents=True)
    for i, (name, _) in enumerate(files.items()):
        stem = name[:-4]
        np.save(root / "landmarks/RL" / f"{stem}.npy", rect(100, 400, 200, 800))
        np.save(root / "landmarks/LL" / f"{stem}.npy", rect(600, 900, 200, 800))
        np.save(root / "landmarks/H" / f"{stem}.npy", rect(350, 750 + 100 * i, 500, 800))
        line = np.array([[300, 150], [500, 150 + 20 * i]], np.float64)
        np.save(root / "landmarks/RCLA" / f"{stem}.npy", line)
        np.save(root / "landmarks/LCLA" / f"{stem}.npy", np.array([[600.0, 170], [800, 150]]))
    pd.DataFrame(
        {
            "File": list(files),
            "Dataset": list(files.values()),
            "Sex": ["F", "M", "M"],
            "Age": ["45", "60Y", 80],
            "Condition": ["normal", "nodule\t", "['cardiomegaly', 'scoliosis']"],
        }
    ).to_csv(root / "clinical.csv", index=False)
    return root


def write_iu(root: Path) -> Path:
    """Two IU images of one patient: DICOM header rows and one report with MeSH terms."""
    root.mkdir(parents=True)
    header = pd.DataFrame(
        {
            "imageid": ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
            "Patient ID": [1, 1],
            "Patient's Sex": [None, None],
            "Patient's Birth Date": [19550820, 19550820],
            "Study Date": [20110328, 20110328],
            "Study Instance UID": ["1.2", "1.2"],
            "Modality": ["CR", "CR"],
            "View Position": ["PA", "LL"],
            "Pixel Spacing": ["['0.1500', '0.1500']", None],
            "Rows": [2828, 2828],
            "Columns": [2320, 2320],
        }
    )
    with gzip.open(root / "nlmcxr_dicom_metadata.csv.gz", "wt") as f:
        header.to_csv(f, index=False)
    xml = (
        b"<eCitation><MeSH><major>Cardiomegaly/mild</major><major>normal</major></MeSH>"
        b'<parentImage id="CXR1_1_IM-0001-3001"></parentImage></eCitation>'
    )
    with tarfile.open(root / "NLMCXR_reports.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("ecgen-radiology/1.xml")
        info.size = len(xml)
        tar.addfile(info, io.BytesIO(xml))
    return root
