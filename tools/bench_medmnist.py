"""The classifier against MedMNIST's reference training script, on the same data.

    python -m tools.bench_medmnist REFERENCE_DIR [--epochs 3] [--out build/bench_medmnist.tsv]

REFERENCE_DIR is the ``MedMNIST2D`` folder of github.com/MedMNIST/experiments (measured at
commit 70b6b3a). Its ``train_and_eval_pytorch.py`` runs unchanged: ResNet-18 (its own
28 px variant), Adam at 1e-3, batch 128, and after every epoch an evaluation of train, val
and test. It reads PneumoniaMNIST from ``$HOME/.medmnist``, so it gets a scratch home
holding this pipeline's fetched file; it logs through tensorboardX, which is not in the
lock, so a stand-in module records each scalar with the seconds since the start instead.

The target MedMNIST v2 reports for that script (100 epochs, 28 px): 0.854 test accuracy.
The table gives the seconds until the reference's test accuracy first reaches it, and
the wall time of this pipeline's ``train_classifier`` + ``evaluate_classifier`` (its test
accuracy is measured once, at the end; no per-epoch test score exists or is wanted).
Run alone on the machine, from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools import queue
from tools.paths import metrics_path

ROOT = Path(__file__).resolve().parents[1]
REPORTED_ACCURACY = 0.854  # MedMNIST v2, ResNet-18 (28), PneumoniaMNIST test ACC
RECORDER = """\
import os, time
_START = time.perf_counter()


class SummaryWriter:
    def __init__(self, log_dir=None, **kwargs):
        self._out = open(os.environ["BENCH_SCALARS"], "a")

    def add_scalar(self, tag, value, step):
        self._out.write(f"{tag}\\t{step}\\t{float(value)}\\t{time.perf_counter() - _START}\\n")
        self._out.flush()

    def close(self):
        self._out.close()
"""


def reference(script_dir: Path, npz: Path, epochs: int) -> tuple[list[dict], float]:
    """Per-epoch test accuracy and seconds of the reference script; its wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-medmnist-") as tmp:
        home, shim = Path(tmp) / "home", Path(tmp) / "shim"
        (home / ".medmnist").mkdir(parents=True)
        (home / ".medmnist" / "pneumoniamnist.npz").symlink_to(npz.resolve())
        shim.mkdir()
        (shim / "tensorboardX.py").write_text(RECORDER)
        scalars = Path(tmp) / "scalars.tsv"
        env = {**os.environ, "HOME": str(home), "BENCH_SCALARS": str(scalars),
               "PYTHONPATH": os.pathsep.join([str(shim), str(script_dir)])}  # fmt: skip
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "train_and_eval_pytorch.py", "--data_flag", "pneumoniamnist",
             "--num_epochs", str(epochs), "--gpu_ids", "-1", "--output_root", tmp],
            cwd=script_dir, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - start
        rows = [line.split("\t") for line in scalars.read_text().splitlines()]
    return [
        {"epoch": int(step) + 1, "test_acc": float(value), "seconds": float(seconds)}
        for tag, step, value, seconds in rows
        if tag == "test_acc"
    ], wall


def ours(repo: Path) -> tuple[float, float]:
    """Wall seconds of train_classifier + evaluate_classifier, and the test accuracy."""
    start = time.perf_counter()
    queue.dvc(repo, "repro", "evaluate_classifier")
    seconds = time.perf_counter() - start
    metrics = json.loads((repo / metrics_path("classifier.paths.eval_live")).read_text())
    return seconds, metrics["test"]["accuracy"]


def main() -> None:
    """Run both, one after the other, and write the table to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="the MedMNIST2D folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench_medmnist.tsv")
    args = parser.parse_args()

    with queue.scratch_clone(ROOT, "bench-medmnist-", "pneumoniamnist") as repo:
        npz = repo / "data/raw/pneumoniamnist/pneumoniamnist.npz"
        epochs, ref_wall = reference(args.reference, npz, args.epochs)
        our_seconds, our_acc = ours(repo)
    reached = next((e for e in epochs if e["test_acc"] >= REPORTED_ACCURACY), None)
    lines = ["what\tseconds\ttest_accuracy"]
    lines += [f"reference epoch {e['epoch']}\t{e['seconds']:.1f}\t{e['test_acc']:.4f}"
              for e in epochs]  # fmt: skip
    lines.append(f"reference, {args.epochs} epochs, whole script\t{ref_wall:.1f}\t–")
    when = f"{reached['seconds']:.1f}" if reached else "not reached"
    lines.append(f"reference: first epoch at >= {REPORTED_ACCURACY}\t{when}\t–")
    lines.append(f"cxrlab train_classifier + evaluate_classifier\t{our_seconds:.1f}\t{our_acc:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
