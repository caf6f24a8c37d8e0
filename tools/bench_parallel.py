"""Two classifier experiments, run one after the other and side by side.

    python -m tools.bench_parallel [--epochs 7] [--out build/bench_parallel.tsv]

Run from the repository root with the environment's tools on PATH, alone on the machine
(issue 18). It clones the repository into a scratch folder beside it (so ``../shared``
resolves), fetches PneumoniaMNIST there, and times:

- ``sequential``: ``dvc exp run`` twice (seeds 1, 2), one after the other;
- ``queue -j 2``: two queued (seeds 3, 4), ``dvc queue start -j 2``, without a thread budget;
- ``queue -j 2, CXRLAB_WORKERS=2``: the same (seeds 5, 6), each process on half the cores;
- ``accelerate``: one experiment as ``accelerate launch --multi_gpu --num_processes 2``
  (two DDP processes over gloo, each on half of every batch), against ``one process``.

Each row gives the wall time, its ratio to the sequential run and every experiment's best
val AUC. The scratch clone is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tools import queue
from tools.paths import metrics_path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (1, 2)  # the sequential run's; the queued runs take 3, 4 and 5, 6


def sh(*cmd: str, cwd: Path, env: dict | None = None) -> str:
    """Run ``cmd``; its stdout, or exit with its stderr's tail when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def val_aucs(repo: Path) -> dict[str, float]:
    """Best val AUC of every experiment of the workspace's commit, by experiment name."""
    found = {}
    for row in json.loads(sh("dvc", "exp", "show", "--json", cwd=repo)):
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                metrics = rev["data"]["metrics"][metrics_path("classifier.paths.train_live")]
                found[rev["name"]] = metrics["data"]["best_val_auc"]
    return found


def overrides(seed: int, epochs: int) -> tuple[str, ...]:
    """``dvc exp run``'s ``-S`` options for one experiment."""
    return ("-S", f"classifier.train.seed={seed}", "-S", f"classifier.train.epochs={epochs}")


def queued(repo: Path, epochs: int, tag: str, workers: str | None, seeds: tuple[int, ...]) -> float:
    """Seconds for ``seeds`` queued and run with ``dvc queue start -j 2``."""
    experiments = {
        f"{tag}-s{seed}": ["train_classifier", *overrides(seed, epochs)] for seed in seeds
    }
    return queue.run_queue(repo, experiments, 2, workers)


def launch(repo: Path, *launcher: str) -> float:
    """Seconds for stages/train_classifier.py under ``launcher`` (outside DVC)."""
    start = time.perf_counter()
    sh(*launcher, "stages/train_classifier.py", cwd=repo)
    return time.perf_counter() - start


def run_all(repo: Path, epochs: int) -> list[tuple[str, float]]:
    """Every way's wall time, in a clone with the data fetched; checks the thread budget."""
    start = time.perf_counter()
    for seed in SEEDS:
        sh("dvc", "exp", "run", "train_classifier", "-n", f"seq-s{seed}",
           *overrides(seed, epochs), cwd=repo)  # fmt: skip
    rows = [("sequential", time.perf_counter() - start)]
    # New seeds for each way: DVC's run cache would restore a seed's outputs, not train.
    rows.append(("queue -j 2", queued(repo, epochs, "q", None, (3, 4))))
    rows.append(("queue -j 2, CXRLAB_WORKERS=2", queued(repo, epochs, "qw", "2", (5, 6))))
    log = sh("dvc", "queue", "logs", "qw-s5", cwd=repo)  # did the queue pass the budget on?
    budget = [line for line in log.splitlines() if "threads:" in line]
    rows.append((f"# queued stage's log: {budget[-1] if budget else 'no threads line'}", 0.0))

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["classifier"]["train"].update(seed=SEEDS[0], epochs=epochs)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))  # launched directly
    rows.append(("one process (seed 1)", launch(repo, sys.executable)))
    accelerate = str(Path(sys.executable).parent / "accelerate")
    ddp = launch(repo, accelerate, "launch", "--multi_gpu", "--num_processes", "2")
    rows.append(("accelerate, 2 processes (seed 1)", ddp))
    return rows


def main() -> None:
    """Time every way in a scratch clone and write the table to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench_parallel.tsv")
    args = parser.parse_args()

    with queue.scratch_clone(ROOT, "bench-parallel-", "pneumoniamnist") as repo:
        rows = run_all(repo, args.epochs)
        aucs = val_aucs(repo)

    base = rows[0][1]
    lines = ["way\tseconds\tratio_to_sequential"]
    lines += [name if name.startswith("#") else f"{name}\t{sec:.1f}\t{sec / base:.2f}"
              for name, sec in rows]  # fmt: skip
    lines += [f"# best val AUC {name}\t{auc:.4f}" for name, auc in sorted(aucs.items())]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
