"""Where the stages write, read from params.yaml, so the tools spell no output path."""

from __future__ import annotations

from pathlib import Path

from cxrlab.core.config import load_params
from cxrlab.report.report import lookup, metrics_file

ROOT = Path(__file__).resolve().parents[1]


def metrics_path(params_key: str) -> str:
    """A stage's metrics file, relative to the repository root, from its folder's params key.

    ``report.paths.headline_live`` gives ``metrics/headline/metrics.json``.
    """
    return metrics_file(lookup(load_params(ROOT / "params.yaml"), params_key)).as_posix()
