"""Figures for the captioning stages: examples with their captions, and scores."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrlab.core.figures import plt, save_figure


def caption_examples_figure(
    images: Sequence[np.ndarray],
    references: Sequence[str],
    generated: Sequence[str],
    concepts: Sequence[str],
    path: str | Path,
) -> Path:
    """One row per test image: the image, then its reference, generated caption and concepts."""
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(10, 1.9 * n), width_ratios=[1, 4], squeeze=False)
    for ax_img, ax_txt, image, ref, gen, found in zip(
        axes[:, 0], axes[:, 1], images, references, generated, concepts, strict=True
    ):
        ax_img.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax_img.axis("off")
        ax_txt.axis("off")
        lines = [
            ("reference", ref, "black"),
            ("generated", gen, "#1f4e9c"),
            ("concepts", found or "(none)", "#555555"),
        ]
        y = 0.95
        for label, text, color in lines:
            wrapped = textwrap.fill(f"{label}: {text}", 95)
            ax_txt.text(
                0, y, wrapped, va="top", fontsize=8, color=color, transform=ax_txt.transAxes
            )
            y -= 0.14 * (wrapped.count("\n") + 1) + 0.06
    fig.tight_layout()
    return save_figure(fig, path)


def caption_scores_figure(scores: dict[str, dict[str, float]], keys: Sequence[str], path) -> Path:
    """Grouped bars: each system's value of each metric in ``keys``."""
    fig, ax = plt.subplots(figsize=(1.3 * len(keys) + 2, 3.4))
    width = 0.8 / len(scores)
    for i, (system, row) in enumerate(scores.items()):
        xs = np.arange(len(keys)) + i * width
        ax.bar(xs, [row[k] for k in keys], width, label=system.replace("_", " "))
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [k.replace("_", "-") for k in keys])
    ax.set(title="test captions: model vs baselines")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
