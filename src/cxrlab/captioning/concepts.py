"""Concept detection: natural-language concepts in captions, mapped to UMLS CUIs.

The text-to-CUI mapping is learned from ROCO, whose captions come with the CUIs
that UMLS tagging found in them. For every word n-gram ``g`` (1 to ``max_n`` words)
and CUI ``c``, ``P(c | g)`` is the share of captions containing ``g`` that carry
``c``; ``g`` maps to every ``c`` with ``P(c | g) >= threshold`` once ``g`` is seen
in at least ``min_count`` captions. A caption's concepts are the union over its
n-grams. Each CUI is named by the n-gram that best matches it (highest Jaccard
overlap of the captions containing each), which gives the natural-language concepts.

ROCO predates COVID-19 and barely names a few of the finding labels the chest
X-ray datasets use, so those labels (and only those) come from the hand-written
table :data:`FINDING_CUIS`.

Scoring follows ImageCLEFmed Caption: per-image F1 between predicted and reference
CUI sets (1 when both are empty), averaged over images.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from cxrlab.captioning.config import MapperConfig
from cxrlab.captioning.evaluate import WORD, concept_f1
from cxrlab.core.errors import DataError
from cxrlab.core.utils import atomic_path, write_json

FINDING_CUIS = {
    "covid 19": ("C5203670", "COVID-19"),
    "ards": ("C0035222", "acute respiratory distress syndrome"),
    "hiatal hernia": ("C0019291", "hiatal hernia"),
    "mass": ("C0577559", "mass"),
}
"""The finding labels of covid_lungseg and NIH ChestX-ray14 that ROCO lacks."""


def ngrams(text: str, max_n: int) -> set[str]:
    """The distinct 1..max_n word n-grams of lower-cased ``text``."""
    words = WORD.findall(text.lower())
    return {
        " ".join(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)
    }


class ConceptMapper:
    """A learned n-gram -> CUI table with a name per CUI."""

    def __init__(self, table: dict[str, list[str]], names: dict[str, str], max_n: int) -> None:
        self.table, self.names, self.max_n = table, names, max_n
        for term, (cui, name) in FINDING_CUIS.items():
            self.table[term] = [cui]
            self.names[cui] = name

    @classmethod
    def fit(
        cls,
        pairs: Iterable[tuple[str, set[str]]],
        threshold: float,
        min_count: int,
        max_n: int = 3,
    ) -> ConceptMapper:
        """Learn the table from (caption, CUIs) pairs."""
        gram_count: Counter[str] = Counter()
        cui_count: Counter[str] = Counter()
        joint: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for text, cuis in pairs:
            grams = ngrams(text, max_n)
            gram_count.update(grams)
            cui_count.update(cuis)
            for g in grams:
                joint[g].update(cuis)
        table, best = {}, {}
        for g, n in gram_count.items():
            if n < min_count:
                continue
            hits = sorted(c for c, k in joint[g].items() if k / n >= threshold)
            if hits:
                table[g] = hits
            for c in hits:
                k = joint[g][c]
                # ties go to the longer, then the alphabetically later n-gram: deterministic
                rank = (round(k / (n + cui_count[c] - k), 9), g.count(" "), g)
                best[c] = max(best.get(c, rank), rank)
        return cls(table, {c: rank[2] for c, rank in best.items()}, max_n)

    def __call__(self, text: str) -> list[str]:
        """The sorted CUIs found in ``text``."""
        found = set()
        for g in ngrams(text, self.max_n):
            found.update(self.table.get(g, ()))
        return sorted(found)

    def name(self, cui: str) -> str:
        """The natural-language concept of a CUI."""
        return self.names.get(cui, cui)

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (atomically)."""
        write_json(path, {"max_n": self.max_n, "table": self.table, "names": self.names})

    @classmethod
    def load(cls, path: str | Path) -> ConceptMapper:
        """Read a table :meth:`save` wrote.

        Raises:
            DataError: If the file is missing or not a mapper.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path} not found: run the build_concept_mapper stage first.")
        data = json.loads(path.read_text())
        if not {"max_n", "table", "names"} <= set(data):
            raise DataError(f"{path} is not a concept mapper (expected max_n, table, names).")
        return cls(data["table"], data["names"], data["max_n"])


def tune_mapper(
    pairs: Sequence[tuple[str, set[str]]], cfg: MapperConfig
) -> tuple[ConceptMapper, dict[str, float]]:
    """Choose threshold and min_count on a held-out tail of ``pairs``, then refit on all.

    Returns:
        The mapper fitted on every pair, and the chosen values with their dev F1.
    """
    cut = int(len(pairs) * (1 - cfg.dev_fraction))
    fit_part, dev = pairs[:cut], pairs[cut:]
    best = {"dev_f1": -1.0}
    for threshold in cfg.thresholds:
        for min_count in cfg.min_counts:
            mapper = ConceptMapper.fit(fit_part, threshold, min_count, cfg.max_n)
            f1 = concept_f1([mapper(t) for t, _ in dev], [c for _, c in dev])
            if f1 > best["dev_f1"]:
                best = {"dev_f1": f1, "threshold": threshold, "min_count": min_count}
    mapper = ConceptMapper.fit(pairs, best["threshold"], int(best["min_count"]), cfg.max_n)
    return mapper, best


def write_concept_csvs(
    ids: Sequence[str], concepts: Sequence[Sequence[str]], mapper: ConceptMapper, stem: str | Path
) -> tuple[Path, Path]:
    """Write the two ImageCLEF submission formats, ``ID,CUIs`` with ``;`` separators.

    ``<stem>_names.csv`` holds the natural-language concepts, ``<stem>_cuis.csv``
    the UMLS CUI codes.
    """
    paths = Path(f"{stem}_names.csv"), Path(f"{stem}_cuis.csv")
    for path, render in zip(paths, (mapper.name, str), strict=True):
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ID", "CUIs"])
            for image_id, cuis in zip(ids, concepts, strict=True):
                # several CUIs can share a name (ROCO tags "radiograph" with four)
                writer.writerow([image_id, ";".join(dict.fromkeys(render(c) for c in cuis))])
    return paths
