"""Figures for the generation stages: sample grids, domain FID and class agreement."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlab.core.figures import Panel, plt, save_figure, save_gallery


def save_sample_grid(rows: Sequence[tuple[str, np.ndarray]], title: str, path: str | Path) -> Path:
    """One labelled row of grayscale images (N, H, W) per entry of ``rows``."""
    return save_gallery(
        [[Panel(image) for image in images] for _, images in rows],
        path,
        row_labels=[label for label, _ in rows],
        title=title,
        panel_size=0.9,
    )


def plot_generation_scores(scores: dict, reference_fid: float, path: str | Path) -> Path:
    """Bars of domain FID and class agreement for each sampler x variant."""
    keys = [(s, v) for s in scores for v in scores[s]]
    labels = [f"{s}\n{v}" for s, v in keys]
    colors = ["#4575b4" if v == "base" else "#d73027" for _, v in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.bar(labels, [scores[s][v]["domain_fid"] for s, v in keys], color=colors)
    left.axhline(reference_fid, color="k", ls="--", lw=1, label="real val vs real test")
    left.set(title="domain FID vs real test (lower is better)")
    left.legend(fontsize=8)
    right.bar(labels, [scores[s][v]["class_agreement"] for s, v in keys], color=colors)
    right.axhline(0.5, color="k", ls=":", lw=1)
    right.set(title="class agreement (classifier = prompt)", ylim=(0, 1))
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sweep(rows: Sequence[dict[str, float]], x: str, path: str | Path) -> Path:
    """Generation scores of LCM + LoRA against one swept param ``x`` (one row per run).

    Each row has ``x``, ``val_domain_fid`` and ``class_agreement_<class>`` keys, and
    ``domain_fid`` (test) where the sweep read test; the lines are sorted by ``x``.
    """
    rows = sorted(rows, key=lambda r: r[x])
    xs = [r[x] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(xs, [r["val_domain_fid"] for r in rows], "o-", color="#d73027", label="vs real val")
    if all("domain_fid" in r for r in rows):
        left.plot(xs, [r["domain_fid"] for r in rows], "s--", color="#999", label="vs real test")
    left.set(title="LCM + LoRA domain FID (lower is better)", xlabel=x)
    left.legend(fontsize=8)
    for name, color in (("normal", "#4575b4"), ("pneumonia", "#d73027")):
        right.plot(xs, [r[f"class_agreement_{name}"] for r in rows], "o-", color=color, label=name)
    right.set(title="LCM + LoRA class agreement", xlabel=x, ylim=(0, 1))
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
            ticks = sorted(set(xs))  # one plain label per swept value, no 2x10^2 minors
            ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
            ax.minorticks_off()
    fig.tight_layout()
    return save_figure(fig, path)
