"""Rewrite the value and seed-spread cells of the README's results table.

    python -m tools.results_table        # after `dvc repro` and `make seeds`

Each row names its key in ``metrics/headline/metrics.json``; the value cell gets that metric and
the last cell ``mean ± std`` from ``metrics/seed_spread.json``, each at the digits the
row already shows (tests/test_readme.py checks the same). A metric without a spread keeps
``–``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(
    r"^(\|[^|\n]*\|[^|\n]*\| `([a-z_]+)\.([a-z0-9_]+)` \| )([\d.]+)( \| )([^|\n]*)( \|)$", re.M
)


def rewrite(readme: str, headline: dict, spread: dict) -> str:
    """``readme`` with every results row's value and spread cells filled from the JSONs."""

    def row(m: re.Match) -> str:
        section, key, shown = m.group(2), m.group(3), m.group(4)
        digits = len(shown.split(".")[1]) if "." in shown else 0
        value = f"{headline[section][key]:.{digits}f}"
        found = spread.get(section, {}).get(key)
        cell = "–" if not found or found["std"] is None else (
            f"{found['mean']:.{digits}f} ± {found['std']:.{digits}f}")  # fmt: skip
        return f"{m.group(1)}{value}{m.group(5)}{cell}{m.group(7)}"

    return ROW.sub(row, readme)


def main() -> None:
    """Rewrite README.md in place."""
    from tools.paths import metrics_path

    headline = json.loads((ROOT / metrics_path("report.paths.headline_live")).read_text())
    spread = json.loads((ROOT / "metrics" / "seed_spread.json").read_text())["metrics"]
    path = ROOT / "README.md"
    path.write_text(rewrite(path.read_text(), headline, spread))


if __name__ == "__main__":
    main()
