"""``report`` in params.yaml: the report configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportFigures:
    """``report.paths.figures``: the file each figure of the part is written to."""

    classifier_roc: str
    classifier_confusion: str


@dataclass(frozen=True)
class ReportPaths:
    """``report.paths``: what the report stage writes."""

    summary: str
    html: str
    headline_live: str
    figures: ReportFigures


@dataclass(frozen=True)
class ReportParams:
    """``report``: the pipeline summary and the HTML report."""

    paths: ReportPaths
    title: str = "cxrlab pipeline report"
