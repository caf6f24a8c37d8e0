"""train_classifier as two DDP processes over gloo (accelerate) against one process."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def outputs(root: Path, paths: dict) -> dict[str, Path]:
    """Every file the stage wrote, by path relative to ``root``."""
    found = {}
    for top in (paths["model"], paths["train_live"], *paths["figures"].values()):
        for f in [root / top, *(root / top).rglob("*")]:
            if f.is_file():
                found[str(f.relative_to(root))] = f
    return found


def train(root: Path, *launcher: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(REPO / "src")
    cmd = [*launcher, str(REPO / "stages" / "train_classifier.py")]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def test_two_ddp_processes_train_and_write_what_one_process_writes(workdir):  # noqa: F811
    root, params = workdir
    params["classifier"]["train"].update(epochs=8)
    params["classifier"]["train"]["optim"]["lr"] = 0.01  # enough to learn the blob
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    paths = params["classifier"]["paths"]
    data = root / paths["data"]
    data.parent.mkdir(parents=True)
    shutil.copy(root / "mirror/pneumoniamnist/pneumoniamnist.npz", data)

    assert train(root, str(BIN / "python")).count("kept epoch") == 1  # fit's last line
    single = root / "single"
    single.mkdir()
    for top in ("models", "metrics", "plots"):
        shutil.move(root / top, single / top)
    log = train(root, str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2")
    assert log.count("kept epoch") == 2  # two processes trained ...
    assert "process 2 of 2 (DistributedType.MULTI_CPU)" in log  # ... together, over gloo
    # each takes its share of the cores (accelerate sets one thread), OpenMP without spinning
    assert "threads: 1 on" in log and "shared by 2 processes" in log and "PASSIVE" in log

    one, two = outputs(single, paths), outputs(root, paths)
    assert one.keys() == two.keys()  # the same files, written once
    m1 = json.loads((single / paths["train_live"] / "metrics.json").read_text())
    m2 = json.loads((root / paths["train_live"] / "metrics.json").read_text())
    assert m1.keys() == m2.keys()
    # Same batches and averaged gradients; batch norm sees half a batch per process, so
    # the weights are close, not equal.
    assert m1["best_val_auc"] > 0.8 and m2["best_val_auc"] > 0.8, (m1, m2)
    assert abs(m1["best_val_auc"] - m2["best_val_auc"]) < 0.1, (m1, m2)
    w1 = load_file(single / paths["model"] / "model.safetensors")
    w2 = load_file(root / paths["model"] / "model.safetensors")
    assert w1.keys() == w2.keys()
    moved = [float((w1[k] - w2[k]).abs().max()) for k in w1 if w1[k].is_floating_point()]
    assert max(moved) > 0  # really a different run, not a copy
    assert not (root / paths["checkpoint"]).exists()  # removed once, by the main process


def test_the_other_trainers_keep_their_replicas_in_sync(tmp_path):
    """Segmenter, CLIP, captioner and LoRA as 2 processes: each trains on half of every
    batch, the averaged gradients keep both copies of the weights identical, and the
    losses (averaged over the processes) are finite and fall."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    out = tmp_path / "ddp.json"
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           str(REPO / "tests" / "ddp_worker.py"), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report.pop("processes") == 2
    assert report.keys() == {"segmenter", "clip", "captioner", "lora"}
    for name, run in report.items():
        assert run["spread"] == 0.0, name  # every update identical in both processes
        losses = run["losses"]
        assert all(map(math.isfinite, losses)) and min(losses[1:]) < losses[0], (name, losses)
