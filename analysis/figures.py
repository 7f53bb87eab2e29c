"""The report's figures: PNGs with a title, labelled axes, a legend and a caption.

Each function takes the frames of one (dataset, arch) group (the comparison heatmap
takes them all), writes ``<name>.png`` and ``<name>.csv`` (the numbers drawn) into
``out_dir`` and returns ``(path, caption)``; ``None`` when the figure has no data.
The caption is one sentence that states the numbers the figure rests on.

Figures use matplotlib's object API (``Figure``), never ``pyplot``: no global state,
no backend to choose, nothing left open after a figure is saved.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from analysis.figure_style import (
    HIGHLIGHT,
    METRIC_LABELS,
    FigureResult,
    fmt3,
    group_label,
    group_tag,
    method_color,
    save_figure,
    unique_legend,
)
from analysis.load import (
    PROPOSED,
    attack_vs_sparsity,
    defense_tradeoff,
    divergence_by_class,
    groups,
    in_group,
    method_vs_knowledge,
    order_attacks,
    order_knowledge,
    original_reference,
    samia_vs_baselines,
    select,
    strongest_with_strength,
)
from analysis.stats import seed_intervals

ROC_AT = 0.01
N_ROC_ATTACKS = 3


def fig_attack_vs_sparsity(attacks: pd.DataFrame, out_dir: Path,
                           metric: str = "accuracy") -> FigureResult:
    """One panel per attack: the metric against sparsity, a line per pruning method,
    the original model dashed; SAMIA's panel framed in red."""
    pivots = attack_vs_sparsity(attacks, metric)
    if not pivots:
        return None
    ref = original_reference(attacks, metric)
    names = order_attacks(set().union(*(p.columns for p in pivots.values())))
    smax = max(p.index.max() for p in pivots.values())
    at_max = pd.DataFrame({m: p.loc[smax] for m, p in pivots.items() if smax in p.index}).T
    highlight = PROPOSED if PROPOSED in names else at_max.mean().idxmax()
    label = METRIC_LABELS.get(metric, metric)
    label_cap = label[0].upper() + label[1:]

    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    # A fixed layout: constrained layout costs over a second on a 3x3 grid.
    height = 2.4 * nrows + 1.3
    fig = Figure(figsize=(3.4 * ncols + 0.8, height))
    fig.subplots_adjust(left=0.75 / (3.4 * ncols + 0.8), right=0.98, top=1 - 0.55 / height,
                        bottom=1.0 / height, hspace=0.45, wspace=0.12)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True, sharex=True)
    first_col = {id(ax) for ax in axes[:, 0]}
    # The lowest used panel of each column carries the x label (the grid may be ragged).
    bottom = {id(axes[max(r for r in range(nrows) if r * ncols + j < len(names)), j])
              for j in range(ncols)}
    axes = axes.ravel()
    # Error bars and the original's band: the 95% t-interval over seeds (none for one).
    used = select(attacks, knowledge="full", pruned=True, defended=False)
    bars = {k: v.half_width for k, v in
            seed_intervals(used, ["method", "sparsity", "attack"], metric).items()}
    ref_bars = {k[0]: v.half_width for k, v in seed_intervals(
        select(attacks, knowledge="original"), ["attack"], metric).items()}
    for ax, a in zip(axes, names):
        for m, p in pivots.items():
            if a in p.columns:
                yerr = [bars.get((m, s, a), np.nan) for s in p.index]
                ax.errorbar(p.index, p[a], yerr=np.nan_to_num(yerr), marker="o", capsize=2,
                            color=method_color(m), label=m)
        if a in ref.index and not math.isnan(ref[a]):
            ax.axhline(ref[a], ls="--", color="gray", label="original (unpruned)")
            if not math.isnan(ref_bars.get(a, np.nan)):
                ax.axhspan(ref[a] - ref_bars[a], ref[a] + ref_bars[a], color="gray",
                           alpha=0.15, lw=0)
        ax.set_title(a + (" (proposed)" if a == PROPOSED else ""),
                     color=HIGHLIGHT if a == highlight else "black",
                     fontweight="bold" if a == highlight else "normal")
        if a == highlight:
            for spine in ax.spines.values():
                spine.set(color=HIGHLIGHT, linewidth=2)
        if id(ax) in bottom:
            ax.set_xlabel("sparsity")
            ax.xaxis.set_tick_params(labelbottom=True)
        if id(ax) in first_col:
            ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    unique_legend(fig, axes[:len(names)], loc="lower center")
    fig.suptitle(f"{label_cap} vs sparsity, {group_label(attacks)} "
                 "(knowledge full, undefended)")

    n_cells = used["cell_key"].nunique() + select(attacks, knowledge="original")[
        "cell_key"].nunique()
    v = float(at_max[highlight].mean())
    k = int(at_max[highlight].notna().sum())
    o = float(ref.get(highlight, float("nan")))
    data = pd.concat([p.reset_index().melt(id_vars="sparsity", var_name="attack",
                                           value_name=metric).assign(method=m)
                      for m, p in pivots.items()]
                     + [ref.rename(metric).reset_index().assign(method="original")])
    data["ci_half_width"] = [
        ref_bars.get(a, np.nan) if m == "original" else bars.get((m, s, a), np.nan)
        for m, s, a in zip(data["method"], data.get("sparsity", np.nan), data["attack"])]
    path = save_figure(fig, out_dir, f"attack_vs_sparsity_{metric}_{group_tag(attacks)}", data)
    caption = (f"{label_cap} of {len(names)} attacks against sparsity, one line per pruning "
               f"method (knowledge full, undefended victims, mean over seeds); "
               f"{highlight} reaches {v:.3f} at sparsity {smax:g} (mean over {k} methods) vs "
               f"{fmt3(o)} for the original model, over {n_cells} cells; bars and the "
               f"grey band: 95% t-interval over {attacks['seed'].nunique()} seeds "
               "(none with one seed).")
    return path, caption


def fig_samia_heatmap(attacks: pd.DataFrame, out_dir: Path) -> FigureResult:
    """The paper's comparison table as a heatmap, the best cell of each row framed."""
    table = samia_vs_baselines(attacks)
    if table.empty:
        return None
    vals = table.drop(columns="best")
    cols = list(vals.columns)
    rows = [" / ".join(map(str, idx)) for idx in vals.index]
    fig = Figure(figsize=(1.0 * len(cols) + 4.0, 0.55 * len(rows) + 2.6), layout="constrained")
    ax = fig.subplots()
    arr = vals.to_numpy(dtype=float)
    im = ax.imshow(arr, cmap="viridis", aspect="auto")
    mid = np.nanmean(arr)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if not math.isnan(arr[i, j]):
                ax.text(j, i, f"{arr[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if arr[i, j] < mid else "black")
    for i, best in enumerate(table["best"]):
        ax.add_patch(Rectangle((cols.index(best) - 0.5, i - 0.5), 1, 1, fill=False,
                               edgecolor=HIGHLIGHT, linewidth=2.5))
    ax.set_xticks(range(len(cols)), labels=cols, rotation=45, ha="right")
    for tick in ax.get_xticklabels():
        if tick.get_text() == PROPOSED:
            tick.set(fontweight="bold", color=HIGHLIGHT)
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("attack")
    ax.set_ylabel("dataset / arch / pruning method")
    fig.colorbar(im, ax=ax, label="balanced attack accuracy")
    ax.legend(handles=[Patch(facecolor="none", edgecolor=HIGHLIGHT, linewidth=2,
                             label="best attack in row")],
              loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize="small")
    fig.suptitle("SAMIA vs the eight baselines (knowledge full, undefended pruned victims)")

    n_cells = select(attacks, knowledge="full", pruned=True, defended=False)["cell_key"].nunique()
    wins = int((table["best"] == PROPOSED).sum())
    i, j = np.unravel_index(np.nanargmax(arr), arr.shape)
    data = vals.reset_index().assign(best=table["best"].to_numpy())
    path = save_figure(fig, out_dir, "samia_vs_baselines", data)
    caption = (f"Mean attack accuracy per dataset / arch / pruning method over sparsities and "
               f"seeds (knowledge full, undefended pruned victims), best attack per row framed; "
               f"SAMIA is the best attack in {wins} of {len(rows)} rows and the highest cell is "
               f"{cols[j]} on {rows[i]} at {arr[i, j]:.3f}, over {n_cells} cells.")
    return path, caption


def _gap_phrase(table: pd.DataFrame, col: str, who: str) -> str:
    if col not in table:
        return f"no {who} cell"
    s = table[col]
    return f"{s.mean():.3f} ({who}, range {s.min():.3f} to {s.max():.3f})"


def fig_divergence(divergence: pd.DataFrame, out_dir: Path) -> FigureResult:
    """Per-class confidence and sensitivity gaps, original vs pruned, as grouped bars."""
    table, sparsity = divergence_by_class(divergence)
    if table.empty:
        return None
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    x = np.arange(len(table))
    # Error bars: 95% t-intervals over seeds of each class's gap (none for one seed).
    parts = {"original": select(divergence, knowledge="original"),
             "pruned": select(divergence, knowledge="full", pruned=True, defended=False)}
    if sparsity is not None:
        parts["pruned"] = parts["pruned"][parts["pruned"]["sparsity"] == sparsity]
    for ax, gap, title in zip(axes, ("conf_gap", "sens_gap"),
                              ("confidence gap (member - non-member p_y)",
                               "sensitivity gap (non-member - member sens_y)")):
        for offset, who, color in ((-0.2, "original", "gray"), (0.2, "pruned", HIGHLIGHT)):
            col = f"{gap}_{who}"
            if col in table:
                lab = who if who == "original" else f"pruned, sparsity {sparsity:g}"
                bars = seed_intervals(parts[who], ["class_id"], gap)
                yerr = [bars[(c,)].half_width if (c,) in bars else np.nan for c in table.index]
                ax.bar(x + offset, table[col], width=0.4, color=color, label=lab,
                       yerr=np.nan_to_num(yerr), capsize=2)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, labels=[str(c) for c in table.index])
        ax.set_xlabel("class")
        ax.set_ylabel(gap)
        ax.set_title(title, fontsize="medium")
    unique_legend(fig, axes)
    fig.suptitle(f"Per-class prediction divergence, {group_label(divergence)}")

    pruned = select(divergence, knowledge="full", pruned=True, defended=False)
    pruned = pruned[pruned["sparsity"] == sparsity] if sparsity is not None else pruned
    n_cells = pruned["cell_key"].nunique() + select(divergence, knowledge="original")[
        "cell_key"].nunique()
    n_methods = pruned["method"].nunique()
    path = save_figure(fig, out_dir, f"divergence_{group_tag(divergence)}", table.reset_index())
    where = (f"pruned at sparsity {sparsity:g} (knowledge full, undefended, mean over "
             f"{n_methods} methods)" if sparsity is not None else "no pruned cell")
    caption = (f"Per-class confidence gap and sensitivity gap, original model vs {where}; the "
               f"confidence gap averages {_gap_phrase(table, 'conf_gap_pruned', 'pruned')} vs "
               f"{_gap_phrase(table, 'conf_gap_original', 'original')} over classes, over "
               f"{n_cells} cells; bars: 95% t-intervals over seeds.")
    return path, caption


def fig_defense_tradeoff(attacks: pd.DataFrame, out_dir: Path) -> FigureResult:
    """Victim test accuracy (x) against the strongest attack's accuracy (y), one point
    per PPB strength, a line per pruning method."""
    per_method = defense_tradeoff(attacks)
    if per_method.empty or not (per_method.index.get_level_values("strength") > 0).any():
        return None
    overall = defense_tradeoff(attacks, by=("strength",))
    strengths = sorted(overall.index)
    marker = {s: "osD^vP*Xph"[i % 10] for i, s in enumerate(strengths)}
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    # Error bars: 95% t-intervals over seeds of both coordinates (none for one seed).
    cells = strongest_with_strength(attacks)
    yerr = seed_intervals(cells, ["method", "strength"], "accuracy")
    xerr = seed_intervals(cells, ["method", "strength"], "victim_test_acc")
    for method, sub in per_method.groupby(level="method"):
        sub = sub.droplevel("method").sort_index()
        ax.errorbar(sub["victim_test_acc"], sub["attack_accuracy"], color=method_color(method),
                    xerr=np.nan_to_num([xerr[(method, s)].half_width for s in sub.index]),
                    yerr=np.nan_to_num([yerr[(method, s)].half_width for s in sub.index]),
                    capsize=2, label=method)
        for strength, row in sub.iterrows():
            ax.plot(row["victim_test_acc"], row["attack_accuracy"], ls="none",
                    marker=marker[strength], color=method_color(method), markersize=7)
    # Marker shape encodes the strength: one grey legend entry per strength.
    for s in strengths:
        ax.plot([], [], ls="none", marker=marker[s], color="gray", label=f"PPB λ={s:g}")
    ax.axhline(0.5, ls=":", color="gray", label="chance (0.5)")
    ax.set_xlabel("victim test accuracy")
    ax.set_ylabel("strongest attack's balanced accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"PPB defense trade-off, {group_label(attacks)} (knowledge full)")

    points = "; ".join(f"lambda={s:g}: attack {r.attack_accuracy:.3f}, test "
                       f"{r.victim_test_acc:.3f}" for s, r in overall.iterrows())
    path = save_figure(fig, out_dir, f"defense_tradeoff_{group_tag(attacks)}",
                       per_method.reset_index())
    caption = (f"Victim test accuracy against the strongest attack's accuracy per PPB strength "
               f"(knowledge full, a line per pruning method, mean over sparsities and seeds); "
               f"over all methods {points}; over {int(overall['n_cells'].sum())} cells; "
               "bars: 95% t-intervals over seeds.")
    return path, caption


def mean_roc(roc: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per attack, the mean TPR over cells on the union of their FPR points.

    Each curve is interpolated onto the common grid first, so cells whose FPR points
    differ still average point by point.
    """
    out = {}
    for attack, g in roc.groupby("attack"):
        grid = np.unique(np.round(g["fpr"].to_numpy(), 12))
        curves = [np.interp(grid, c["fpr"].to_numpy(), c["tpr"].to_numpy())
                  for _, c in g.sort_values("fpr").groupby("cell_key")]
        out[attack] = (grid, np.mean(curves, axis=0))
    return out


def fig_roc(roc: pd.DataFrame, out_dir: Path) -> FigureResult:
    """Mean ROC curves, log-log, of the attacks with the highest TPR at 1% FPR on pruned
    victims at the highest sparsity; the original model's curves dashed."""
    pruned = select(roc, knowledge="full", pruned=True, defended=False)
    if pruned.empty:
        return None
    sparsity = float(pruned["sparsity"].max())
    pruned = pruned[pruned["sparsity"] == sparsity]
    orig = select(roc, knowledge="original")
    curves, ref = mean_roc(pruned), mean_roc(orig)
    at = {a: float(np.interp(ROC_AT, *c)) for a, c in curves.items()}
    top = sorted(at, key=lambda a: (-at[a], a))[:N_ROC_ATTACKS]
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    for i, a in enumerate(top):
        ax.plot(*curves[a], color=f"C{i}", label=f"{a}, pruned {sparsity:g}")
        if a in ref:
            ax.plot(*ref[a], color=f"C{i}", ls="--", label=f"{a}, original")
    lo = float(pruned["fpr"].min())
    ax.plot([lo, 1], [lo, 1], ls=":", color="gray", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlim(lo, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize="small")
    ax.set_title(f"ROC of the strongest attacks\n{group_label(roc)}, knowledge full, undefended")

    ref_at = {a: float(np.interp(ROC_AT, *ref[a])) if a in ref else float("nan") for a in top}
    data = pd.concat([pd.DataFrame({"attack": a, "model": who, "fpr": c[a][0], "tpr": c[a][1]})
                      for a in top for who, c in (("pruned", curves), ("original", ref))
                      if a in c])
    path = save_figure(fig, out_dir, f"roc_{group_tag(roc)}", data)
    points = ", ".join(f"{a} {at[a]:.3f} vs {fmt3(ref_at[a])} original" for a in top)
    n_cells = pruned["cell_key"].nunique() + orig["cell_key"].nunique()
    caption = (f"Mean ROC curves on log-log axes of the {len(top)} attacks with the highest "
               f"TPR at 1% FPR on pruned victims at sparsity {sparsity:g} (knowledge full, "
               f"undefended; dashed: original model); TPR at 1% FPR: {points}; over "
               f"{n_cells} cells.")
    return path, caption


def fig_knowledge(attacks: pd.DataFrame, out_dir: Path) -> FigureResult:
    """One attack's accuracy per adversary knowledge setting, bars per pruning method;
    undefended victims, and defended ones in a second panel when there are any."""
    pruned = select(attacks, pruned=True)
    if pruned.empty:
        return None
    present = set(pruned["attack"])
    attack = PROPOSED if PROPOSED in present else \
        pruned.groupby("attack")["accuracy"].mean().idxmax()
    panels = [(False, "undefended victims")]
    if not select(pruned, defended=True).empty:
        panels.append((True, "defended victims (strength > 0)"))
    ref = original_reference(attacks).get(attack, float("nan"))
    fig = Figure(figsize=(6.5 * len(panels), 4.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    frames = []
    for ax, (defended, title) in zip(axes, panels):
        t = method_vs_knowledge(attacks, attack, defended=defended)
        if t.empty:
            ax.set_visible(False)
            continue
        x = np.arange(len(t.columns))
        width = 0.8 / len(t.index)
        bars = seed_intervals(select(pruned[pruned["attack"] == attack], defended=defended),
                              ["method", "knowledge"], "accuracy")
        for i, (method, row) in enumerate(t.iterrows()):
            yerr = [bars[(method, k)].half_width if (method, k) in bars else np.nan
                    for k in t.columns]
            ax.bar(x + (i - (len(t.index) - 1) / 2) * width, row.to_numpy(), width=width,
                   color=method_color(method), label=method, yerr=np.nan_to_num(yerr),
                   capsize=2)
        if not math.isnan(ref):
            ax.axhline(ref, ls="--", color="gray", label="original (unpruned)")
        ax.axhline(0.5, ls=":", color="black", linewidth=0.8, label="chance (0.5)")
        ax.set_xticks(x, labels=list(t.columns), rotation=20, ha="right")
        ax.set_ylim(0.45, None)
        ax.set_xlabel("adversary knowledge")
        ax.set_ylabel(f"{attack} balanced accuracy")
        ax.set_title(title, fontsize="medium")
        frames.append(t.reset_index().melt(id_vars="method", var_name="knowledge",
                                           value_name="accuracy").assign(defended=defended))
    unique_legend(fig, axes)
    fig.suptitle(f"Adversary knowledge, {attack}, {group_label(attacks)}")

    undef = select(pruned[pruned["attack"] == attack], defended=False)
    means = undef.groupby("knowledge")["accuracy"].mean()
    means = means[order_knowledge(means.index)]
    used = pruned[pruned["attack"] == attack]
    n_cells = used["cell_key"].nunique() + select(attacks, knowledge="original")[
        "cell_key"].nunique()
    path = save_figure(fig, out_dir, f"knowledge_{group_tag(attacks)}", pd.concat(frames))
    points = ", ".join(f"{k} {v:.3f}" for k, v in means.items())
    caption = (f"Accuracy of {attack} per adversary knowledge setting, bars per pruning method; "
               f"undefended victims, mean over methods, sparsities and seeds: {points}; "
               f"original model {fmt3(ref)}; over {n_cells} cells; bars: 95% t-intervals "
               "over seeds.")
    return path, caption


def make_figures(results, out_dir: Path) -> list[tuple[str, Path, str]]:
    """Every figure the data allow: (section title, path, caption), in report order."""
    # Imported here: analysis.distributions builds on this module's helpers.
    from analysis.distributions import fig_class_distributions

    out: list[tuple[str, Path, str]] = []

    def add(title: str, made: FigureResult) -> None:
        if made is not None:
            out.append((title, *made))

    add("SAMIA vs the eight baselines", fig_samia_heatmap(results.attacks, out_dir))
    pairs = sorted(set(groups(results.attacks)) | set(groups(results.divergence))
                   | set(groups(results.roc)))
    for g in pairs:
        where = f" ({g[0]} / {g[1]})"
        a, d, r = (in_group(results.attacks, g), in_group(results.divergence, g),
                   in_group(results.roc, g))
        add("Attack accuracy vs sparsity" + where, fig_attack_vs_sparsity(a, out_dir))
        add("TPR at 1% FPR vs sparsity" + where,
            fig_attack_vs_sparsity(a, out_dir, "tpr_at_1pct_fpr"))
        add("Per-class prediction divergence" + where, fig_divergence(d, out_dir))
        add("Per-class distributions, members vs non-members" + where,
            fig_class_distributions(d, out_dir))
        add("Defense trade-off (PPB)" + where, fig_defense_tradeoff(a, out_dir))
        add("ROC curves of the strongest attacks" + where, fig_roc(r, out_dir))
        add("Adversary knowledge" + where, fig_knowledge(a, out_dir))
    return out
