"""``cohort`` in params.yaml: the cohort configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CohortFigures:
    """``cohort.paths.figures``: the file each figure of the part is written to."""

    demographics: str
    views_findings: str
    ctr: str
    nih_lung_area: str


@dataclass(frozen=True)
class CohortPaths:
    """``cohort.paths``: the database's sources and outputs."""

    sources: dict[str, str]
    database: str
    build_live: str
    analysis_live: str
    figures: CohortFigures
    summary: str


@dataclass(frozen=True)
class CohortAnalysis:
    """``cohort.analysis``: what the analysis stage groups and tests."""

    top_findings: int = 8
    cardiomegaly_finding: str = "cardiomegaly"


@dataclass(frozen=True)
class CohortParams:
    """``cohort``: the cohort database and its analysis."""

    paths: CohortPaths
    analysis: CohortAnalysis = field(default_factory=CohortAnalysis)
