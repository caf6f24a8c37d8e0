"""Cohort figures: demographics, views, findings and group comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.reporting.figures import _save, plt

SEX_COLORS = {"F": "#d95f02", "M": "#1b9e77", "unknown": "#999999"}


def demographics_figure(rows: pd.DataFrame, path: str | Path) -> Path:
    """Age histograms per dataset, stacked by sex (rows from ``cohort.DEMOGRAPHICS``)."""
    datasets = sorted(rows.dataset.unique())
    cols = 4
    n_rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 2.4 * n_rows), squeeze=False)
    bins = np.arange(0, 101, 5)
    for ax, name in zip(axes.flat, datasets, strict=False):
        part = rows[rows.dataset == name].assign(sex=lambda d: d.sex.fillna("unknown"))
        groups = [g for g in SEX_COLORS if (part.sex == g).any()]
        ages = [part.loc[part.sex == g, "age_years"].dropna() for g in groups]
        ax.hist(ages, bins=bins, stacked=True, label=groups, color=[SEX_COLORS[g] for g in groups])
        known = part.age_years.notna().sum()
        ax.set_title(f"{name} ({known} of {len(part)} with age)", fontsize=8)
        ax.set_xlabel("age (years)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(datasets) :]:
        ax.axis("off")
    fig.suptitle("Age and sex per dataset (one count per study)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def counts_figure(views: pd.DataFrame, findings: pd.DataFrame, path: str | Path) -> Path:
    """Images per view and dataset (left), and the most frequent findings (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    table = views.pivot_table(index="dataset", columns="view", values="images", fill_value=0)
    table.plot.barh(stacked=True, ax=left, width=0.8, colormap="tab20")
    left.set(xlabel="images", ylabel="", title="Views (DICOM ViewPosition)")
    left.legend(fontsize=7, ncol=2)
    top = findings.groupby("finding").images.sum().sort_values()
    top.plot.barh(ax=right, color="#4575b4")
    right.set(xlabel="images", ylabel="", title=f"Top {len(top)} findings, all datasets")
    right.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def comparison_figure(
    groups: dict[str, np.ndarray], ylabel: str, title: str, path: str | Path
) -> Path:
    """Box plots with the points of each group drawn over them."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    names = list(groups)
    ax.boxplot([groups[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n(n={len(groups[n])})" for n in names])
    for i, name in enumerate(names, 1):
        values = groups[name]
        ax.scatter(i + np.linspace(-0.12, 0.12, len(values)), values, s=6, alpha=0.5)
    ax.set(ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table of ``frame`` (floats rounded)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
