"""The README's results table and pipeline picture say what the repository holds."""

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_results_table_reads_metrics_headline_json():
    """Every value is metrics/headline/metrics.json's, rounded to the digits shown."""
    from tools.paths import metrics_path

    headline = json.loads((REPO / metrics_path("report.paths.headline_live")).read_text())
    rows = re.findall(
        r"^\|[^|\n]*\|[^|\n]*\| `([a-z_]+)\.([a-z0-9_]+)` \| ([\d.]+) \|(?: [^|\n]* \|)?$",
        README,
        re.M,
    )
    assert len(rows) >= 10 and {section for section, _, _ in rows} == set(headline)
    for section, key, shown in rows:
        digits = len(shown.partition(".")[2])
        assert f"{headline[section][key]:.{digits}f}" == shown, f"{section}.{key}"


def test_the_results_table_shows_each_metrics_seed_spread():
    """The last column is metrics/seed_spread.json's mean ± sample std, at the value's digits."""
    spread = json.loads((REPO / "metrics" / "seed_spread.json").read_text())
    assert len(spread["seeds"]) >= 3
    rows = re.findall(
        r"^\|[^|\n]*\|[^|\n]*\| `([a-z_]+)\.([a-z0-9_]+)` \| [\d.]+ \| ([\d.]+) ± ([\d.]+) \|$",
        README,
        re.M,
    )
    assert len(rows) >= 10
    for section, key, mean, std in rows:
        found = spread["metrics"][section][key]
        digits = len(mean.partition(".")[2])
        assert (f"{found['mean']:.{digits}f}", f"{found['std']:.{digits}f}") == (mean, std), key


def test_the_pipeline_picture_is_dvc_dag():
    block = re.search(r"```mermaid\n(.*?)```", README, re.S).group(1)
    dvc = Path(sys.executable).parent / "dvc"
    dag = subprocess.run([dvc, "dag", "--mermaid"], cwd=REPO, capture_output=True, text=True)
    assert dag.returncode == 0, dag.stderr
    assert block.strip() == dag.stdout.strip(), "regenerate it: dvc dag --mermaid"


def test_results_table_tool_fills_value_and_spread_at_the_digits_shown():
    from tools.results_table import rewrite

    table = (
        "| part | metric | `seg.dice` | 0.900 | 0.800 ± 0.010 |\n"
        "|  | other | `seg.hd95` | 30.1 | – |\n"
    )
    headline = {"seg": {"dice": 0.95449, "hd95": 25.26}}
    spread = {"seg": {"dice": {"mean": 0.9501, "std": 0.00123}, "hd95": {"std": None}}}
    assert rewrite(table, headline, spread) == (
        "| part | metric | `seg.dice` | 0.954 | 0.950 ± 0.001 |\n"
        "|  | other | `seg.hd95` | 25.3 | – |\n"
    )
