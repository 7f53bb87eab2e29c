"""Write ``audit.html``: accuracy against leakage for every pruned variant of one model.

Input is the audit's summary: one row per (seed, method, sparsity, defense, strength)
with the variant's test accuracy, its strongest attack, that attack's AUC and TPR at
1% FPR with bootstrap 95% intervals and their change against the original with
paired intervals (``mia_ray.audit.compare``). The
page opens with a plain-language answer: whether pruning raises, lowers or does not
measurably change leakage against the original and by how much (``delta_auc`` with
its paired interval), then which variant to choose within a given accuracy loss, the
original ("do not prune") included, or that the intervals cannot separate them. Then
the table and a Pareto-front figure (accuracy up, AUC down; a PNG beside the page and
embedded in it). With several seeds every number is the mean over
seeds (intervals too: a summary, not a joint interval).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mia_ray.audit.compare import MAX_ACCURACY_DROP  # noqa: E402

VARIANT = ["method", "sparsity", "defense", "strength"]
NUMBERS = ["test_acc", "auc", "auc_lo", "auc_hi", "tpr", "tpr_lo", "tpr_hi", "delta_auc",
           "delta_auc_lo", "delta_auc_hi", "delta_tpr_at_1pct_fpr", "delta_tpr_at_1pct_fpr_lo",
           "delta_tpr_at_1pct_fpr_hi"]
COLORS = {"l1_unstructured": "#1f77b4", "l1_structured": "#ff7f0e",
          "l2_structured": "#2ca02c", "slimming": "#d62728",
          "nm_2_4": "#9467bd", "global_unstructured": "#8c564b", "imp": "#e377c2"}


def variants(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (means over seeds), the original first, with ``pareto``."""
    agg = {c: "mean" for c in NUMBERS}
    agg["attack"] = lambda s: ", ".join(sorted(set(s)))
    table = summary.groupby(VARIANT, as_index=False, sort=True).agg(agg)
    table["original"] = table["method"] == "none"
    table = pd.concat([table[table.original], table[~table.original]], ignore_index=True)
    table["pareto"] = [not any((o.test_acc >= r.test_acc and o.auc <= r.auc)
                               and (o.test_acc > r.test_acc or o.auc < r.auc)
                               for o in table.itertuples() if o.Index != r.Index)
                       for r in table.itertuples()]
    return table


def _name(r) -> str:
    if r.method == "none":
        return "the original model"
    name = f"{r.method} at sparsity {r.sparsity:g}"
    if r.defense != "none":
        name += f" with {r.defense} ({r.strength:g})"
    return name


def _delta(r) -> str:
    return f"{r.delta_auc:+.3f} [{r.delta_auc_lo:+.3f}, {r.delta_auc_hi:+.3f}]"


def _names(rows, limit: int = 3) -> str:
    rows = list(rows.itertuples()) if isinstance(rows, pd.DataFrame) else list(rows)
    named = [f"{_name(r)} ({_delta(r)})" for r in rows[:limit]]
    if len(rows) > limit:
        named.append(f"{len(rows) - limit} more")
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def change(table: pd.DataFrame) -> str:
    """The first sentence: does pruning raise, lower or not measurably change leakage,
    and by how much (the variants' AUC minus the original's, paired 95% intervals)."""
    base, pruned = table[table.original].iloc[0], table[~table.original]
    raised = pruned[pruned.delta_auc_lo > 0].sort_values("delta_auc", ascending=False)
    lowered = pruned[pruned.delta_auc_hi < 0].sort_values("delta_auc")
    same = len(pruned) - len(raised) - len(lowered)
    rest = (f"; {same} of {len(pruned)} do not measurably change it" if same else "")
    if len(raised) and len(lowered):
        return (f"Pruning changes leakage both ways against the original (strongest attack's "
                f"AUC {base.auc:.3f}): {len(raised)} of {len(pruned)} variants leak measurably "
                f"more, up to {_names(raised.head(1))}, and {len(lowered)} measurably less, "
                f"down to {_names(lowered.head(1))}{rest}.")
    if len(raised) or len(lowered):
        moved, more = (raised, "more") if len(raised) else (lowered, "less")
        verb = "raises" if len(raised) else "lowers"
        return (f"Pruning {verb} leakage: {len(moved)} of {len(pruned)} variants leak "
                f"measurably {more} than the original (strongest attack's AUC {base.auc:.3f}),"
                f" by up to {moved.iloc[0].delta_auc:+.3f} AUC ({_names(moved)}){rest}.")
    return (f"Pruning does not measurably change leakage: every variant's AUC differs from "
            f"the original's ({base.auc:.3f}) by an amount whose 95% interval includes zero "
            f"(from {pruned.delta_auc.min():+.3f} to {pruned.delta_auc.max():+.3f}).")


def choice(table: pd.DataFrame, max_drop: float) -> str:
    """Which variant to choose within ``max_drop`` accuracy points (1 = one percentage
    point) of the original, the original itself ("do not prune") included, or that
    the intervals cannot separate the candidates."""
    base, pruned = table[table.original].iloc[0], table[~table.original]
    within = f"Within {max_drop:g} points of the original accuracy ({base.test_acc:.3f})"
    ok = pruned[pruned.test_acc >= base.test_acc - max_drop / 100 - 1e-9]
    if ok.empty:
        closest = pruned.loc[pruned.test_acc.idxmax()]
        return (f"Do not prune: no pruned variant stays within {max_drop:g} points of the "
                f"original accuracy ({base.test_acc:.3f}); the closest is {_name(closest)} at "
                f"{closest.test_acc:.3f}.")
    better = ok[ok.delta_auc_hi < 0].sort_values("delta_auc")
    if len(better):
        best = better.iloc[0]
        tied = [r for r in better.iloc[1:].itertuples() if r.delta_auc_lo <= best.delta_auc_hi]
        if tied:
            return (f"{within}, {_name(best)} and {_names(tied)} leak measurably less than "
                    f"the original and the intervals cannot separate them; {_name(best)} "
                    f"lowers the AUC most ({_delta(best)}, at test accuracy "
                    f"{best.test_acc:.3f}).")
        return (f"{within}, choose {_name(best)}: it leaks least (AUC {best.auc:.3f} "
                f"[{best.auc_lo:.3f}, {best.auc_hi:.3f}], {_delta(best)} against the "
                f"original) at test accuracy {best.test_acc:.3f}.")
    unclear = ok[ok.delta_auc_lo <= 0]
    if unclear.empty:
        return (f"{within}, do not prune: every variant that close leaks measurably more "
                f"than the original ({_names(ok.sort_values('delta_auc'))}).")
    return (f"{within}, the intervals cannot separate the original from "
            f"{_names(unclear.sort_values('delta_auc'))}: none leaks measurably less, so "
            "pruning buys no measurable privacy here and the original (do not prune) is as "
            "good a choice; more audited samples or seeds would narrow the intervals.")


def answer(table: pd.DataFrame, max_drop: float) -> str:
    """The page's answer: the change against the original, then the choice."""
    if table[table.original].empty or table[~table.original].empty:
        return "The audit has no pruned variant (or no original) to compare."
    return f"{change(table)} {choice(table, max_drop)}"


def pareto_figure(table: pd.DataFrame, path: Path) -> Path:
    """Test accuracy (x) against the strongest attack's AUC (y) with 95% intervals."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for method, group in table[~table.original].groupby("method"):
        ax.errorbar(group.test_acc, group.auc,
                    yerr=[group.auc - group.auc_lo, group.auc_hi - group.auc],
                    fmt="o", capsize=3, color=COLORS.get(method), label=method)
        for r in group.itertuples():
            ax.annotate(f"{r.sparsity:g}", (r.test_acc, r.auc), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    for r in table[table.original].itertuples():
        ax.errorbar([r.test_acc], [r.auc], yerr=[[r.auc - r.auc_lo], [r.auc_hi - r.auc]],
                    fmt="*", markersize=13, capsize=3, color="black", label="original")
    front = table[table.pareto].sort_values("test_acc")
    ax.step(front.test_acc, front.auc, where="post", color="grey", linestyle="--",
            linewidth=1, label="Pareto front")
    ax.axhline(0.5, color="grey", linewidth=0.6)
    ax.set_xlabel("test accuracy (higher is better)")
    ax.set_ylabel("strongest attack's AUC (lower leaks less)")
    ax.set_title("Accuracy against leakage (labels: sparsity; bars: 95% CI)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _interval(value: float, lo: float, hi: float, signed: bool = False) -> str:
    if pd.isna(value):
        return "n/a"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(value)} [{f.format(lo)}, {f.format(hi)}]"


def _row_html(r) -> str:
    cells = [
        "original" if r.original else r.method, "" if r.original else f"{r.sparsity:g}",
        r.defense if r.defense != "none" else "", f"{r.strength:g}" if r.defense != "none"
        else "", f"{r.test_acc:.3f}", r.attack,
        _interval(r.auc, r.auc_lo, r.auc_hi), _interval(r.tpr, r.tpr_lo, r.tpr_hi),
        "" if r.original else _interval(r.delta_auc, r.delta_auc_lo, r.delta_auc_hi, True),
        "" if r.original else _interval(r.delta_tpr_at_1pct_fpr, r.delta_tpr_at_1pct_fpr_lo,
                                        r.delta_tpr_at_1pct_fpr_hi, True),
        "yes" if r.pareto else "",
    ]
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def write_audit_page(summary: pd.DataFrame, out_dir: str | Path, *, title: str,
                     max_drop: float = MAX_ACCURACY_DROP, notes: list[str] | None = None) -> Path:
    """Write ``audit.html`` and ``audit_pareto.png`` into ``out_dir``; return the page."""
    out = Path(out_dir)
    table = variants(summary)
    png = pareto_figure(table, out / "audit_pareto.png")
    data = base64.b64encode(png.read_bytes()).decode()
    head = ["method", "sparsity", "defense", "strength", "test accuracy", "strongest attack",
            "AUC [95% CI]", "TPR@1%FPR [95% CI]", "AUC change vs original [95% CI]",
            "TPR@1%FPR change [95% CI]", "Pareto front"]
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:0.9em;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%}"
             ".answer{font-size:1.1em;background:#eef5ff;padding:0.8em;border-radius:4px}")
    parts = [
        "<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="answer" id="answer">{html.escape(answer(table, max_drop))}</p>',
        "<p>Each row is the audited model as it is (original) or pruned at one sparsity and "
        "fine-tuned on its members. Test accuracy is on held-out non-members. The strongest "
        "attack is the one with the highest AUC on one half of the audited samples; its AUC "
        "and TPR are measured on the other half, so the choice does not inflate them. "
        "Intervals are stratified bootstrap 95% intervals over those samples; a change "
        "against the original is paired (the same resampled samples for both models). "
        "TPR@1%FPR is n/a where fewer than 1,000 non-members leave it under ten false "
        "positives.</p>",
        *[f"<p>{html.escape(n)}</p>" for n in (notes or [])],
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>",
        *[_row_html(r) for r in table.itertuples()],
        "</tbody></table>",
        "<h2>Pareto front</h2>",
        f'<figure><img src="data:image/png;base64,{data}" alt="test accuracy against the '
        'strongest attack AUC, with the Pareto front"></figure>',
        "</body></html>",
    ]
    page = out / "audit.html"
    page.write_text("\n".join(parts) + "\n")
    return page
