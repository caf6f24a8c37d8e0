"""The seed spread of every headline metric: the pipeline rerun with other training seeds.

    python -m tools.seed_spread                  # queue seeds 1 and 2, run 2 at a time, collect
    python -m tools.seed_spread --seeds 1 2 3 --jobs 1
    python -m tools.seed_spread --collect-only   # after the experiments have run

Run from the repository root with the environment's tools on PATH, after ``dvc repro``:
the last commit's results are seed 0. Each queued experiment, ``seed-N``, sets every
training and sampling seed to N (:data:`SEED_PARAMS`) and reruns what they reach. The data
splits, the LoRA's image subset and the diffusion base model (VAE, UNet, LCM-LoRA: half an
hour here) keep seed 0, so the FID spread is the LoRA's and the sampler's. The queue runs
with ``CXRLAB_WORKERS`` set to the number of jobs, so the experiments share the cores
(cxrlab.core.threads).

It writes ``metrics/seed_spread.json``: for each headline metric the values by seed, their
mean, sample standard deviation, min and max, and the queue's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from cxrlab.report.report import lookup
from tools import queue
from tools.lora_sweep import runs
from tools.paths import metrics_path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = metrics_path("report.paths.headline_live")
OUT = ROOT / "metrics" / "seed_spread.json"
SEED_PARAMS = (
    "classifier.train.seed",
    "clip.train.seed",
    "clip.lit.train.seed",
    "segmentation.train.seed",
    "lora.seed",
    "diffusion.generate.seed",
    "captioning.train.seed",
)
FIXED = "data splits, the LoRA subset and the diffusion base model (VAE, UNet, LCM-LoRA)"


def dvc(*args: str) -> str:
    """Run ``dvc args`` in the repository; its stdout, or exit with its stderr's tail."""
    return queue.dvc(ROOT, *args)


def run_queue(seeds: list[int], jobs: int) -> float:
    """Queue one experiment per seed, run ``jobs`` at a time; the wall seconds."""
    experiments = {
        f"seed-{seed}": [arg for name in SEED_PARAMS for arg in ("-S", f"{name}={seed}")]
        for seed in seeds
    }
    return queue.run_queue(ROOT, experiments, jobs, workers=str(jobs))


def headlines(shown: list) -> dict[int, dict]:
    """Headline metrics by seed, from ``dvc exp show --json``.

    Every run whose seed params all hold one value counts (the commit's own run is seed
    0); the first run of each seed wins.
    """
    by_seed: dict[int, dict] = {}
    for run in runs(shown):
        params = run["params"].get("params.yaml", {}).get("data", {})
        seeds = {lookup(params, name) for name in SEED_PARAMS}
        headline = (run["metrics"].get(HEADLINE) or {}).get("data")
        if len(seeds) == 1 and headline:
            by_seed.setdefault(seeds.pop(), headline)
    return dict(sorted(by_seed.items()))


def spread(by_seed: dict[int, dict]) -> dict[str, dict[str, dict]]:
    """Per section and metric: the values by seed, mean, sample std, min and max."""
    table: dict[str, dict[str, dict]] = {}
    for section, metrics in by_seed[0].items():
        for metric in metrics:
            values = {s: h[section][metric] for s, h in by_seed.items() if section in h}
            vals = list(values.values())
            table.setdefault(section, {})[metric] = {
                "values": values, "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "min": min(vals), "max": max(vals),
            }  # fmt: skip
    return table


def main() -> None:
    """Queue and run the seeds (unless --collect-only), then write the spread."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument(
        "--queue-seconds",
        type=float,
        help="with --collect-only: the queue's "
        "wall time, measured another way (its stage logs' first and last line)",
    )
    args = parser.parse_args()

    seconds = args.queue_seconds if args.collect_only else run_queue(args.seeds, args.jobs)
    by_seed = headlines(json.loads(dvc("exp", "show", "--json")))
    if len(by_seed) < 3:
        print(f"warning: {len(by_seed)} seeds found ({list(by_seed)}); the target is 3 or more")
    result = {"seeds": list(by_seed), "varied": list(SEED_PARAMS), "fixed": FIXED,
              "queue_seconds": seconds, "jobs": None if seconds is None else args.jobs,
              "metrics": spread(by_seed)}  # fmt: skip
    if seconds is None and OUT.exists():  # keep the wall time of the run that made them
        old = json.loads(OUT.read_text())
        result.update(queue_seconds=old.get("queue_seconds"), jobs=old.get("jobs"))
    OUT.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for section, metrics in result["metrics"].items():
        for metric, s in metrics.items():
            std = "n/a" if s["std"] is None else f"{s['std']:.4f}"
            print(f"{section}.{metric}: {s['mean']:.4f} ± {std} (n={len(s['values'])})")


if __name__ == "__main__":
    main()
