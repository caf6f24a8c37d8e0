"""Table and figure of a LoRA sweep from `dvc exp show --json` (LCM + LoRA scores).

Run the sweep first, e.g. `dvc exp run --queue -S 'lora.steps=200,500,1000,2000'` and
`dvc queue start`, then: python tools/lora_sweep.py lora.steps plots/generation/lora_steps.png
(add ``--where lora.optim.lr=0.001`` to keep only the runs with that value of another param).

Prints one markdown row per experiment that has generation metrics: the swept param,
the val domain FID (the number to choose by), the test domain FID, class agreement
per class, and the LoRA block train_lora kept (step, val loss, diverged). Choose on the
val column; the test column is reported, not used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from typing import Any

from cxrlab.generation.figures import plot_sweep
from cxrlab.report.report import lookup
from tools.paths import metrics_path

METRICS = metrics_path("diffusion.paths.eval_live")
KEPT = metrics_path("diffusion.paths.lora_live")  # train_lora's dvclive summary


def runs(tree: Any) -> list[dict[str, Any]]:
    """Every node of `dvc exp show --json` output that carries params and metrics.

    Queued, running and failed experiments are left out: until they succeed, their node
    shows the baseline's metrics.
    """
    found = []
    if isinstance(tree, dict):
        state = (tree.get("executor") or {}).get("state", "success")
        if state != "success":
            return []
        data = tree.get("data")
        if tree.get("rev") == "workspace":  # uncommitted; its baseline commit is listed too
            data = None
        if isinstance(data, dict) and data.get("params") and data.get("metrics"):
            found.append({"name": tree.get("name") or data.get("name") or tree.get("rev"),
                          **data})  # fmt: skip
        for value in tree.values():
            found += runs(value)
    elif isinstance(tree, list):
        for value in tree:
            found += runs(value)
    return found


def row(run: dict[str, Any], key: str, where: dict[str, str] | None = None):
    """The swept value, the LCM + LoRA scores and the kept block of one run.

    None if the run has no generation metrics, or a param differs from ``where``
    (values compared as text).
    """
    try:
        params = run["params"]["params.yaml"]["data"]
        scores = run["metrics"][METRICS]["data"]["lcm"]["lora"]
    except (KeyError, TypeError):
        return None
    if any(str(lookup(params, k)) != v for k, v in (where or {}).items()):
        return None
    kept = ((run["metrics"].get(KEPT) or {}).get("data") or {}).get("kept", {})
    return {"name": run["name"], key: lookup(params, key), **scores,
            **{f"kept_{k}": v for k, v in kept.items()}}  # fmt: skip


def main() -> None:
    """Print the table and write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("key", help="the swept param, e.g. lora.steps")
    parser.add_argument("figure", help="where to write the figure (PNG)")
    parser.add_argument("--where", action="append", default=[], metavar="PARAM=VALUE")
    args = parser.parse_args()
    key, where = args.key, dict(w.split("=", 1) for w in args.where)
    shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    found = (row(r, key, where) for r in runs(json.loads(shown)))
    rows = {r["name"]: r for r in filter(None, found)}
    print(f"| {key} | run | val FID | test FID | agreement normal | agreement pneumonia "
          "| kept step | kept val loss | diverged |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows.values(), key=lambda r: r[key]):
        cells = [r[key], r["name"], f"{r['val_domain_fid']:.2f}", f"{r['domain_fid']:.2f}"]
        cells += [f"{r[f'class_agreement_{c}']:.3f}" for c in ("normal", "pneumonia")]
        cells += [r.get("kept_kept_step", "?"), f"{r.get('kept_val_loss', float('nan')):.4f}",
                  r.get("kept_diverged", "?")]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    plot_sweep(list(rows.values()), key, args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
