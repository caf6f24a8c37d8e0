"""Cohort figures: demographics, views, findings and group comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.core.figures import plt, save_figure

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
    return save_figure(fig, path)


def counts_figure(views: pd.DataFrame, findings: pd.DataFrame, top: int, path: str | Path) -> Path:
    """View shares per dataset, then each dataset's ``top`` most frequent findings.

    Args:
        views: Rows of ``cohort.VIEWS`` (dataset, view, images).
        findings: Rows of ``cohort.FINDINGS`` (dataset, finding, images).
        top: Findings shown per dataset.
        path: The PNG to write.
    """
    datasets = sorted(findings.dataset.unique())
    cols = 4
    n_rows = 1 + -(-len(datasets) // cols)
    fig = plt.figure(figsize=(16, 3.2 * n_rows))
    grid = fig.add_gridspec(n_rows, cols)
    table = views.pivot_table(index="dataset", columns="view", values="images", fill_value=0)
    totals = table.sum(axis=1)
    shares = table.div(totals, axis=0)
    shares.index = [f"{d} (n={int(totals[d])})" for d in shares.index]
    ax = fig.add_subplot(grid[0, :])
    shares.plot.barh(stacked=True, ax=ax, width=0.8, colormap="tab20")
    ax.set(xlabel="share of images", ylabel="", title="Views (DICOM ViewPosition) per dataset")
    ax.legend(fontsize=7, ncol=len(shares.columns), loc="lower center", bbox_to_anchor=(0.5, 1.08))
    for i, name in enumerate(datasets):
        ax = fig.add_subplot(grid[1 + i // cols, i % cols])
        part = findings[findings.dataset == name].nlargest(top, "images").iloc[::-1]
        ax.barh(part.finding.str.slice(0, 28), part.images, color="#4575b4")
        ax.set_title(f"{name}: top findings", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("images", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


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
    return save_figure(fig, path)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table of ``frame`` (floats rounded)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
