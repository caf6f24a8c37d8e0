"""Segmentation figures: overlays of chosen cases, and Dice by subgroup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.core.figures import BAD, GOOD, Panel, plt, save_figure, save_gallery
from cxrlab.segmentation.data import read_pair


def pick_cases(
    scores: pd.DataFrame, per_group: int, column: str = "dice"
) -> dict[str, pd.DataFrame]:
    """The best, median and worst ``per_group`` rows by ``column``."""
    ranked = scores.sort_values(column, ascending=False).reset_index(drop=True)
    mid = max(0, len(ranked) // 2 - per_group // 2)
    return {
        "best": ranked.head(per_group),
        "median": ranked.iloc[mid : mid + per_group],
        "worst": ranked.tail(per_group).iloc[::-1],
    }


def overlay_figure(
    cases: dict[str, pd.DataFrame],
    root: str | Path,
    predict: Callable[[np.ndarray], np.ndarray],
    path: str | Path,
) -> Path:
    """Rows of images with the ground truth (green) and prediction (red) outlined."""
    root = Path(root)
    rows, labels = [], []
    for group, frame in cases.items():
        panels = []
        for row in frame.itertuples():
            image, target = read_pair(root / "images" / row.image, root / "masks" / row.mask)
            title = f"Dice {row.dice:.3f}\n{row.view}, {row.sex}"
            contours = [(target == 1, GOOD), (predict(image), BAD)]
            panels.append(Panel(image, title, contours=contours))
        rows.append(panels)
        labels.append(group)
    return save_gallery(
        rows, path, labels, title="test: ground truth (green), prediction (red)", panel_size=2.4
    )


def dice_by_group_figure(scores: pd.DataFrame, groups: list[str], path: str | Path) -> Path:
    """Strip plots of per-image Dice for each subgroup column (test split)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), squeeze=False)
    for ax, column in zip(axes[0], groups, strict=True):
        labels = scores[column].astype(str)
        names = sorted(labels.unique())
        for i, name in enumerate(names):
            values = scores.loc[labels == name, "dice"]
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), values, s=10, alpha=0.7)
            ax.hlines(values.median(), i - 0.3, i + 0.3, color="k", linewidth=1.5)
        ticks = [f"{n}\n(n={(labels == n).sum()})" for n in names]
        ax.set_xticks(range(len(names)), ticks, fontsize=7)
        ax.set(title=f"Dice by {column}", ylabel="Dice" if column == groups[0] else None)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return save_figure(fig, path)
