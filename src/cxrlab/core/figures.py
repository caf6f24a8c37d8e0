"""Figures a person looks at: image galleries with overlays, and training curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cxrlab.core.utils import atomic_path  # noqa: E402

GOOD, BAD = "#1a9850", "#d73027"


@dataclass
class Panel:
    """One image of a gallery.

    Attributes:
        image: Grayscale image (H, W).
        title: Caption above the image.
        heatmap: Optional map (H, W) in [0, 1] drawn over the image.
        color: Optional frame colour (e.g. green for correct, red for wrong).
        contours: Optional (mask, colour) pairs whose outlines are drawn over the image.
    """

    image: np.ndarray
    title: str = ""
    heatmap: np.ndarray | None = None
    color: str | None = None
    contours: Sequence[tuple[np.ndarray, str]] = ()


def save_gallery(
    rows: Sequence[Sequence[Panel]],
    path: str | Path,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    panel_size: float = 1.6,
) -> Path:
    """Save rows of panels as one PNG; rows may differ in length.

    Args:
        rows: The panels, row by row.
        path: The PNG to write (atomically).
        row_labels: One label per row, written at its left.
        title: The figure's title.
        panel_size: Inches per panel.

    Returns:
        The path written.
    """
    n_rows, n_cols = len(rows), max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(panel_size * n_cols + 1.2, panel_size * n_rows + 0.6),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            panel = row[c]
            ax.imshow(panel.image, cmap="gray", vmin=0, vmax=255 if panel.image.max() > 1 else 1)
            if panel.heatmap is not None:
                ax.imshow(panel.heatmap, cmap="jet", alpha=0.4, vmin=0, vmax=1)
            for mask, color in panel.contours:
                if mask.any():
                    ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=0.8)
            ax.set_title(panel.title, fontsize=7)
            for spine in ax.spines.values():
                spine.set_visible(panel.color is not None)
                if panel.color:
                    spine.set_edgecolor(panel.color)
                    spine.set_linewidth(2.5)
        if row_labels:
            axes[r][0].set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Plot losses and validation metrics per epoch, side by side, as a PNG.

    A metric some epochs lack (measured every few epochs) is drawn at the epochs that have it.
    """
    keys = list(dict.fromkeys(k for row in history for k in row))  # first-seen order

    def curve(ax, key: str, label: str) -> None:
        rows = [row for row in history if key in row]
        ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker="o", label=label)

    others = [k for k in keys if k.startswith("val_") and k != "val_loss"]
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(9 if others else 4.8, 3.4))
    left, right = (axes[0], axes[1]) if others else (axes, None)
    for key in [k for k in ("train_loss", "val_loss") if k in keys]:
        curve(left, key, key.replace("_", " "))
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    for key in others:
        curve(right, key, key[4:].replace("_", " "))
    if right is not None:
        right.set(xlabel="epoch", title="validation")
    for ax in [a for a in (left, right) if a is not None]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (120 dpi), atomically, and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def plot_confusion_matrices(
    counts: dict[str, dict[str, int]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """One confusion matrix per entry of ``counts`` ({name: {tn, fp, fn, tp}}), side by side."""
    fig, axes = plt.subplots(1, len(counts), figsize=(2.9 * len(counts), 3.0), squeeze=False)
    for ax, (name, c) in zip(axes[0], counts.items(), strict=True):
        matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
        shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)  # row-normalised
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (r, col), value in np.ndenumerate(matrix):
            color = "white" if shares[r, col] > 0.5 else "black"
            ax.text(
                col,
                r,
                f"{value}\n{shares[r, col]:.0%}",
                ha="center",
                va="center",
                fontsize=9,
                color=color,
            )
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=class_names,
            yticklabels=class_names,
            xlabel="predicted",
            ylabel="true",
            title=name,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_note(text: str, path: str | Path) -> Path:
    """A small PNG holding one line of text, where a stage has no curves to show."""
    fig, ax = plt.subplots(figsize=(6, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    return save_figure(fig, path)
