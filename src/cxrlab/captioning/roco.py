"""ROCO radiology captions with their UMLS CUIs (no images)."""

from __future__ import annotations

from pathlib import Path

from cxrlab.core.errors import DataError


def _read_tsv(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise DataError(f"{path} not found: run the fetch_data stage for roco_captions.")
    rows = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if not fields[0].startswith("ROCO_"):
            raise DataError(f"{path}:{lineno} does not start with a ROCO id.")
        rows[fields[0]] = [f.strip() for f in fields[1:] if f.strip()]
    return rows


def read_roco(root: str | Path, split: str) -> list[tuple[str, str, set[str]]]:
    """The radiology captions of one ROCO split as (id, caption, CUIs), in file order.

    Raises:
        DataError: If a file is missing or malformed.
    """
    folder = Path(root) / split / "radiology"
    captions = _read_tsv(folder / "captions.txt")
    cuis = _read_tsv(folder / "cuis.txt")
    return [(i, " ".join(text), set(cuis.get(i, []))) for i, text in captions.items()]
