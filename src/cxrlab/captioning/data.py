"""Image-caption pairs for chest X-rays, built from the real metadata of two datasets.

No chest X-ray dataset with free-text reports and images is mirrored here, so the
captions are composed from what the datasets do record about each image:

1. the view: ``"PA chest radiograph."`` (``AP``, ``AP supine``);
2. the findings: ``covid_lungseg``'s finding column (``COVID-19``, ``COVID-19, ARDS``,
   ``No Finding``) or NIH ChestX-ray14's finding labels (``Cardiomegaly|Effusion``),
   as one sentence, e.g. ``"Cardiomegaly and pleural effusion."``;
3. for covid images with clinical notes: the first sentence of the notes that
   describes the radiograph (it names an imaging term such as opacity or
   consolidation, and no CT scan or lab value), cut to ``max_note_words`` words.

So part of every caption is templated from labels and part is a radiologist's free
text. Images are split by patient, as for segmentation.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.captioning.config import CaptionDataConfig
from cxrlab.captioning.vocabulary import COVID_FINDINGS, NIH_LABELS, VIEWS
from cxrlab.core.errors import DataError
from cxrlab.core.utils import atomic_path
from cxrlab.segmentation.data import normalize_xray, read_gray, read_index, resize, split_by_patient

CAPTION_TABLE, CAPTION_IMAGES = "captions.csv", "images.npz"  # prepare_captions' files
IMAGING_TERMS = re.compile(
    r"opacit|consolidat|ground[- ]glass|infiltrat|effusion|pneumothorax|atelecta|"
    r"cardiomegaly|airspace|interstitial|reticul|nodul|lobe|zone|lung field",
    re.IGNORECASE,
)
NOT_RADIOGRAPH = re.compile(r"\bCT\b|tomograph|\d\s*(mg|g/l|mmol|%)", re.IGNORECASE)


def note_sentence(notes: object, max_words: int) -> str:
    """The first sentence of clinical notes that describes the radiograph, or ``""``."""
    if not isinstance(notes, str):
        return ""
    notes = re.sub(r"\s*\((?:fig|figure)[^)]*\)", "", notes.replace("\n", " "), flags=re.IGNORECASE)
    for sentence in re.split(r"(?<=[.!?])\s+", notes):
        if IMAGING_TERMS.search(sentence) and not NOT_RADIOGRAPH.search(sentence):
            words = sentence.strip().rstrip(".").split()
            return " ".join(words[:max_words]) + "."
    return ""


def nih_findings(labels: str) -> str:
    """``"Cardiomegaly|Effusion"`` -> ``"Cardiomegaly and pleural effusion."``."""
    if labels == "No Finding":
        return COVID_FINDINGS["No Finding"]
    words = [NIH_LABELS[x] for x in labels.split("|") if x in NIH_LABELS]
    if not words:
        raise DataError(f"NIH finding labels '{labels}' name no known finding.")
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return text[0].upper() + text[1:] + "."


def covid_pairs(root: str | Path, max_note_words: int) -> pd.DataFrame:
    """Caption rows for ``covid_lungseg`` (images with an unknown finding are left out)."""
    root = Path(root)
    index = read_index(root)
    meta = root / "metadata.csv"
    notes = pd.read_csv(meta) if meta.is_file() else pd.DataFrame({"filename": []})
    if "clinical_notes" not in notes.columns:
        notes["clinical_notes"] = None
    notes = notes[["filename", "clinical_notes"]]
    index = index.merge(notes, left_on="image", right_on="filename", how="left")
    index = index[index["finding"].isin(COVID_FINDINGS) & index["view"].isin(VIEWS)]
    captions = [
        f"{VIEWS[r.view]} chest radiograph. {COVID_FINDINGS[r.finding]} "
        f"{note_sentence(r.clinical_notes, max_note_words)}".strip()
        for r in index.itertuples()
    ]
    return pd.DataFrame(
        {
            "image": "covid_lungseg/images/" + index["image"],
            "patient": "covid_" + index["patientid"].astype(str),
            "source": "covid_lungseg",
            "caption": captions,
        }
    )


def nih_pairs(root: str | Path) -> pd.DataFrame:
    """Caption rows for the NIH ChestX-ray14 sample."""
    path = Path(root) / "index.csv"
    if not path.is_file():
        raise DataError(f"{path} not found: run the fetch_data stage for nih_cxr14_sample.")
    index = pd.read_csv(path)
    index = index[index["View Position"].isin(VIEWS)]
    captions = [
        f"{VIEWS[view]} chest radiograph. {nih_findings(labels)}"
        for view, labels in zip(index["View Position"], index["Finding Labels"], strict=True)
    ]
    return pd.DataFrame(
        {
            "image": "nih_cxr14_sample/images/" + index["Image Index"],
            "patient": "nih_" + index["Patient ID"].astype(str),
            "source": "nih_cxr14_sample",
            "caption": captions,
        }
    )


def build_caption_pairs(raw_dir: str | Path, cfg: CaptionDataConfig) -> pd.DataFrame:
    """All caption rows with their split: columns image, patient, source, caption, split."""
    raw_dir = Path(raw_dir)
    pairs = pd.concat(
        [
            covid_pairs(raw_dir / "covid_lungseg", cfg.max_note_words),
            nih_pairs(raw_dir / "nih_cxr14_sample"),
        ],
        ignore_index=True,
    )
    pairs["split"] = split_by_patient(
        pairs["patient"], cfg.fractions, cfg.seed, key="captioning.prepare.fractions"
    ).to_numpy()
    if cfg.max_per_split is not None:
        shuffled = pairs.sample(frac=1.0, random_state=cfg.seed)
        drawn = shuffled.groupby("split").head(cfg.max_per_split).index
        pairs = pairs.loc[sorted(drawn)].reset_index(drop=True)
    return pairs


def load_pair_images(pairs: pd.DataFrame, raw_dir: str | Path, size: int) -> np.ndarray:
    """Read, normalise and resize every row's image to (N, size, size) uint8."""
    raw_dir = Path(raw_dir)
    return np.stack([resize(normalize_xray(read_gray(raw_dir / p)), size) for p in pairs["image"]])


def check_captions(pairs: pd.DataFrame, where: str) -> None:
    """Stop with one line when a caption is missing or empty.

    Raises:
        DataError: Naming the first image without text.
    """
    for column in ("image", "caption", "split"):
        if column not in pairs.columns:
            raise DataError(f"{where} lacks the column '{column}'.")
    text = pairs["caption"].fillna("").astype(str).str.strip()
    if (text == "").any():
        image = pairs.loc[text == "", "image"].iloc[0]
        raise DataError(f"{where}: the image {image} has an empty caption; every image needs text.")


def split_of(pairs: pd.DataFrame, images: np.ndarray, split: str) -> tuple[np.ndarray, list[str]]:
    """The images and captions of one split."""
    rows = (pairs["split"] == split).to_numpy()
    return images[rows], pairs.loc[rows, "caption"].tolist()


def save_caption_data(directory: str | Path, pairs: pd.DataFrame, images: np.ndarray) -> None:
    """Write the prepare_captions output folder, atomically: the table and its images."""
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        pairs.to_csv(tmp / CAPTION_TABLE, index=False)
        image = pairs["image"].to_numpy().astype(str)
        np.savez_compressed(tmp / CAPTION_IMAGES, images=images, image=image)


def load_caption_data(directory: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Load the prepare_captions output: the caption table and its images, row-aligned.

    Raises:
        DataError: If a file is missing, a caption is empty, or the two disagree.
    """
    directory = Path(directory)
    table, arrays = directory / CAPTION_TABLE, directory / CAPTION_IMAGES
    for path in (table, arrays):
        if not path.is_file():
            raise DataError(f"{path} not found: run the prepare_captions stage first.")
    pairs = pd.read_csv(table)
    check_captions(pairs, str(table))
    with np.load(arrays) as data:
        images, names = data["images"], data["image"]
    if len(names) != len(pairs) or (names != pairs["image"].to_numpy()).any():
        raise DataError(f"{arrays} and {table} list different images: rerun prepare_captions.")
    return pairs, images
