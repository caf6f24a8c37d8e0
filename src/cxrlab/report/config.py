"""``report`` in params.yaml: the report configs, checked on load.

Plain dataclasses that import neither transformers nor diffusers; :mod:`cxrlab.params` reads
the sections into them (unknown or mistyped keys fail with their dotted name).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportPaths:
    """``report.paths``: what the report stage writes."""

    summary: str
    html: str
    headline: str
    figures: str


@dataclass(frozen=True)
class ReportParams:
    """``report``: the pipeline summary and the HTML report."""

    paths: ReportPaths
    title: str = "cxrlab pipeline report"
