"""`dvc exp run --queue` with `dvc queue start -j 2`, on a one-stage pipeline."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
TRAIN = """
import json, yaml
p = yaml.safe_load(open("params.yaml"))
json.dump({"score": p["train"]["lr"] * 2}, open("metrics.json", "w"))
"""
DVC_YAML = """
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [train.lr]
    metrics:
      - metrics.json:
          cache: false
"""


def committed_pipeline(root: Path, train: str, dvc_yaml: str, params: str):
    """A one-stage DVC repository in ``root``, reproduced and committed; returns a runner
    of commands there (this venv first on PATH) that fails the test on a non-zero exit."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    (root / "train.py").write_text(train)
    (root / "dvc.yaml").write_text(dvc_yaml)
    (root / "params.yaml").write_text(params)
    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "repro", "-q")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return run


def test_queued_experiments_run_two_at_a_time(tmp_path):
    run = committed_pipeline(tmp_path, TRAIN, DVC_YAML, "train:\n  lr: 0.1\n")
    for name, lr in (("lr-a", "0.25"), ("lr-b", "0.5")):
        run("dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}")
    assert run("dvc", "queue", "status").count("Queued") == 2
    run("dvc", "queue", "start", "-j", "2")

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = run("dvc", "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status

    scores, pids = {}, set()
    for row in json.loads(run("dvc", "exp", "show", "--json")):  # workspace, then the commit
        for exp in row["experiments"] or []:
            pids.add(exp["executor"]["local"]["pid"])
            for rev in exp["revs"]:
                scores[rev["name"]] = rev["data"]["metrics"]["metrics.json"]["data"]["score"]
    assert scores == {"lr-a": 0.5, "lr-b": 1.0}
    assert len(pids) == 2  # one worker process each


def test_lora_sweep_reads_every_experiment_of_dvc_exp_show(tmp_path):
    """`dvc exp show --json` nests experiments under their baseline; each run with
    generation metrics becomes one row, keyed by the swept param."""
    from tools.lora_sweep import KEPT, METRICS, row, runs

    def node(name, steps, fid):
        scores = {"val_domain_fid": fid, "domain_fid": fid + 1, "class_agreement_normal": 0.5,
                  "class_agreement_pneumonia": 0.9}  # fmt: skip
        params = {"params.yaml": {"data": {"lora": {"steps": steps}}}}
        metrics = {METRICS: {"data": {"lcm": {"lora": scores}}}}
        return {"rev": name[::-1], "name": name, "data": {"params": params, "metrics": metrics}}

    baseline = node("main", 200, 10.0)
    kept = {"data": {"kept": {"kept_step": 200, "val_loss": 0.1, "diverged": 0}}}
    baseline["data"]["metrics"][KEPT] = kept
    baseline["experiments"] = [
        {"executor": {"state": "success"}, "revs": [node("exp-a", 1000, 12.0)]},
        {"revs": [node("exp-b", 500, 11.0)]},
        {"executor": {"state": "running"}, "revs": [node("exp-c", 2000, 1.0)]},  # left out
    ]
    workspace = {"rev": "workspace", "name": None, "data": node("ws", 200, 10.0)["data"]}
    shown = [workspace, baseline]  # the workspace repeats its baseline: left out
    rows = [r for r in (row(r, "lora.steps") for r in runs(shown)) if r]
    assert sorted((r["name"], r["lora.steps"], r["val_domain_fid"]) for r in rows) == [
        ("exp-a", 1000, 12.0), ("exp-b", 500, 11.0), ("main", 200, 10.0)]  # fmt: skip
    kept = [r.get("kept_diverged") for r in rows if r["name"] == "main"]
    assert kept == [0]  # train_lora's record, read beside the generation scores
    only = [r["name"] for r in runs(shown) if row(r, "lora.steps", {"lora.steps": "500"})]
    assert only == ["exp-b"]

    from cxrlab.generation.figures import plot_sweep

    assert plot_sweep(rows, "lora.steps", tmp_path / "sweep.png").stat().st_size > 10_000


HEADLINE_TRAIN = """
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
os.makedirs("metrics/headline", exist_ok=True)
json.dump({"segmentation": {"test_dice": p["lora"]["steps"] / 1000}},
          open("metrics/headline/metrics.json", "w"))
json.dump({"val_loss": 0.5, "epoch": 3}, open("metrics/train.json", "w"))
"""


def test_make_exps_shows_the_changed_params_and_the_headline_metrics_only(tmp_path):
    """`make exps`' column filter (the Makefile's EXP_COLUMNS) on two experiments."""
    import re

    import yaml

    from tools.paths import metrics_path

    makefile = (REPO / "Makefile").read_text()
    columns = re.search(r"^EXP_COLUMNS = (.*)$", makefile, re.M).group(1).replace("$$", "$")
    sections = list(yaml.safe_load((REPO / "params.yaml").read_text()))
    sections += list(json.loads((REPO / metrics_path("report.paths.headline_live")).read_text()))
    assert all(re.match(columns, f"{name}.x") for name in sections)  # none left out

    dvc_yaml = (
        "stages:\n  train:\n    cmd: python train.py\n    deps: [train.py]\n"
        "    params: [lora.steps, lora.rank]\n    metrics:\n"
        "      - metrics/headline/metrics.json:\n          cache: false\n"
        "      - metrics/train.json:\n          cache: false\n"
    )
    run = committed_pipeline(tmp_path, HEADLINE_TRAIN, dvc_yaml, "lora:\n  steps: 500\n  rank: 8\n")
    run("dvc", "exp", "run", "-q", "-n", "long", "-S", "lora.steps=1000")
    shown = run("dvc", "exp", "show", "--csv", "--only-changed", "--drop", f"^(?!{columns})")
    header = shown.splitlines()[0].split(",")
    assert "lora.steps" in header and "segmentation.test_dice" in header
    assert not {"lora.rank", "val_loss", "epoch"} & set(header), header


def test_seed_spread_groups_runs_by_their_seed_params():
    """Runs whose seed params all agree count once per seed; mixed seeds, unfinished runs
    and repeats are left out; mean and sample std come out right."""
    from tools.seed_spread import HEADLINE, SEED_PARAMS, headlines, spread

    def node(name, seed, dice, state="success", odd=None):
        params: dict = {}
        for dotted in SEED_PARAMS:
            *parents, leaf = dotted.split(".")
            branch = params
            for part in parents:
                branch = branch.setdefault(part, {})
            branch[leaf] = odd if odd is not None and dotted == SEED_PARAMS[0] else seed
        headline = {"segmentation": {"test_dice": dice}}
        return {"rev": name, "name": name, "executor": {"state": state},
                "data": {"params": {"params.yaml": {"data": params}},
                         "metrics": {HEADLINE: {"data": headline}}}}  # fmt: skip

    baseline = node("main", 0, 0.90)
    baseline["experiments"] = [{"revs": [node("seed-1", 1, 0.92)]},
                               {"revs": [node("seed-2", 2, 0.94)]},
                               {"revs": [node("seed-2b", 2, 0.10)]},  # a repeat: first wins
                               {"revs": [node("mixed", 3, 0.50, odd=4)]},  # not one seed
                               {"revs": [node("seed-5", 5, 0.0, state="running")]}]  # fmt: skip
    by_seed = headlines([baseline])
    assert list(by_seed) == [0, 1, 2]
    dice = spread(by_seed)["segmentation"]["test_dice"]
    assert dice["values"] == {0: 0.90, 1: 0.92, 2: 0.94}
    assert dice["mean"] == pytest.approx(0.92) and dice["std"] == pytest.approx(0.02)
    assert (dice["min"], dice["max"]) == (0.90, 0.94)
