"""The per-class distribution figure: members vs non-members, as the authors plot them.

Draws, per class, the distribution of the true-class confidence p_y and of the
sensitivity sens_y for members and for non-members, from the percentiles every cell
stores in its ``divergence`` rows (``conf_member_q05`` ... ``sens_nonmember_q95``).
Each glyph is a box plot drawn from those percentiles: whiskers 5-95 %, box 25-75 %,
a line at the median. The original model and the pruned victims are drawn one above
the other, so the widening of the member / non-member gap by pruning is visible
class by class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figure_style import (
    HIGHLIGHT,
    FigureResult,
    group_label,
    group_tag,
    save_figure,
    unique_legend,
)
from analysis.load import select
from mia_ray.metrics import DIVERGENCE_QUANTILES, quantile_columns

WHO_COLORS = {"member": HIGHLIGHT, "nonmember": "tab:blue"}
FEATURES = {"conf": "confidence p_y", "sens": "sensitivity sens_y"}


def class_distributions(divergence: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """Per (model, class), each stored percentile averaged over the cells.

    ``model`` is "original" or "pruned": the undefended, knowledge-full victims at the
    highest sparsity present, over methods and seeds (the cells
    :func:`analysis.load.divergence_by_class` uses). Rows with no stored percentiles
    (results written before they were stored) are left out. Returns the frame (index
    (model, class_id), columns :func:`quantile_columns` plus ``cells``) and that sparsity.
    """
    cols = quantile_columns()
    if divergence.empty or not set(cols) <= set(divergence.columns):
        return pd.DataFrame(), None
    divergence = divergence.dropna(subset=cols, how="all")
    orig = select(divergence, knowledge="original")
    pruned = select(divergence, knowledge="full", pruned=True, defended=False)
    sparsity = float(pruned["sparsity"].max()) if not pruned.empty else None
    if sparsity is not None:
        pruned = pruned[pruned["sparsity"] == sparsity]
    parts = []
    for model, part in (("original", orig), ("pruned", pruned)):
        if part.empty:
            continue
        g = part.groupby("class_id")
        table = g[cols].mean().assign(cells=g["cell_key"].nunique())
        parts.append(table.assign(model=model).set_index("model", append=True))
    if not parts:
        return pd.DataFrame(), None
    return pd.concat(parts).reorder_levels(["model", "class_id"]).sort_index(), sparsity


def _box(ax, x: float, q: dict[int, float], color: str, label: str) -> None:
    """One box from percentiles: whiskers 5-95, box 25-75, median line."""
    if any(np.isnan(v) for v in q.values()):
        return
    ax.vlines(x, q[5], q[95], color=color, linewidth=1)
    ax.bar(x, q[75] - q[25], bottom=q[25], width=0.32, color=color, alpha=0.35,
           edgecolor=color, label=label)
    ax.hlines(q[50], x - 0.16, x + 0.16, color=color, linewidth=2)


def median_above(table: pd.DataFrame, model: str) -> tuple[int, int]:
    """(classes whose member median p_y exceeds the non-member one, classes compared)."""
    t = table.loc[model].dropna(subset=["conf_member_q50", "conf_nonmember_q50"])
    return int((t["conf_member_q50"] > t["conf_nonmember_q50"]).sum()), len(t)


def fig_class_distributions(divergence: pd.DataFrame, out_dir: Path) -> FigureResult:
    """Per class, member vs non-member distributions of p_y and sens_y; original and pruned."""
    table, sparsity = class_distributions(divergence)
    if table.empty:
        return None
    models = list(table.index.get_level_values("model").unique())
    fig = Figure(figsize=(11, 2.8 * len(models) + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(models), 2, squeeze=False))
    for row, model in zip(axes, models):
        part = table.loc[model]
        x = np.arange(len(part))
        name = model if model == "original" else f"pruned, sparsity {sparsity:g}"
        for ax, (feature, label) in zip(row, FEATURES.items()):
            for offset, who in ((-0.18, "member"), (0.18, "nonmember")):
                for xi, (_, r) in zip(x, part.iterrows()):
                    q = {p: r[f"{feature}_{who}_q{p:02d}"] for p in DIVERGENCE_QUANTILES}
                    _box(ax, xi + offset, q, WHO_COLORS[who], who.replace("nonm", "non-m"))
            step = max(1, len(x) // 20)  # CIFAR-100: label every 5th class
            ax.set_xticks(x[::step], labels=[str(c) for c in part.index[::step]])
            ax.set_xlabel("class")
            ax.set_ylabel(label)
            ax.set_title(f"{label}, {name}", fontsize="medium")
    unique_legend(fig, axes.ravel())
    fig.suptitle(f"Per-class distributions, members vs non-members, {group_label(divergence)} "
                 "(boxes 25-75 %, whiskers 5-95 %)")
    path = save_figure(fig, out_dir, f"class_distributions_{group_tag(divergence)}",
                       table.reset_index())
    phrases = []
    for model in models:
        above, n = median_above(table, model)
        cells = int(table.loc[model, "cells"].max())
        name = model if model == "original" else f"pruned at sparsity {sparsity:g}"
        phrases.append(f"{above} of {n} classes for the {name} model "
                       f"({cells} cell{'' if cells == 1 else 's'})")
    caption = ("Per-class percentiles of the true-class confidence and the sensitivity, "
               "members vs non-members (knowledge full, undefended, averaged over cells); "
               "the member median confidence exceeds the non-member one in "
               + " and in ".join(phrases) + ".")
    return path, caption
