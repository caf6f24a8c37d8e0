"""Table and figure of a LoRA sweep from `dvc exp show --json` (LCM + LoRA scores).

Run the sweep first, e.g. `dvc exp run --queue -S 'lora.steps=200,500,1000,2000'` and
`dvc queue start`, then: python tools/lora_sweep.py lora.steps plots/generation/lora_steps.png

Prints one markdown row per experiment that has generation metrics: the swept param,
the val domain FID (the number to choose by), the test domain FID, and class agreement
per class. Choose on the val column; the test column is reported, not used.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from cxrlab.reporting.generation import plot_sweep
from cxrlab.reporting.report import lookup

METRICS = "metrics/generation.json"


def runs(tree: Any) -> list[dict[str, Any]]:
    """Every node of `dvc exp show --json` output that carries params and metrics."""
    found = []
    if isinstance(tree, dict):
        data = tree.get("data")
        if isinstance(data, dict) and data.get("params") and data.get("metrics"):
            found.append({"name": tree.get("name") or data.get("name") or tree.get("rev"),
                          **data})  # fmt: skip
        for value in tree.values():
            found += runs(value)
    elif isinstance(tree, list):
        for value in tree:
            found += runs(value)
    return found


def row(run: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The swept value and the LCM + LoRA scores of one run, or None if it has none."""
    try:
        params = run["params"]["params.yaml"]["data"]
        scores = run["metrics"][METRICS]["data"]["lcm"]["lora"]
    except (KeyError, TypeError):
        return None
    return {"name": run["name"], key: lookup(params, key), **scores}


def main() -> None:
    """Print the table and write the figure."""
    key, figure = sys.argv[1], sys.argv[2]
    shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    rows = {r["name"]: r for r in filter(None, (row(r, key) for r in runs(json.loads(shown))))}
    print(f"| {key} | run | val FID | test FID | agreement normal | agreement pneumonia |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows.values(), key=lambda r: r[key]):
        cells = [r[key], r["name"], f"{r['val_domain_fid']:.2f}", f"{r['domain_fid']:.2f}"]
        cells += [f"{r[f'class_agreement_{c}']:.3f}" for c in ("normal", "pneumonia")]
        print("| " + " | ".join(map(str, cells)) + " |")
    plot_sweep(list(rows.values()), key, figure)
    print(f"wrote {figure}")


if __name__ == "__main__":
    main()
