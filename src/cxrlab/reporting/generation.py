"""Figures for the generation stages: sample grids, domain FID and class agreement."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlab.reporting.figures import Panel, _save, plt, save_gallery


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
    return _save(fig, path)
