"""Write ``audit.html``: accuracy against leakage for every pruned variant of one model.

Input is the audit's summary: one row per (seed, method, sparsity, defense, strength)
with the variant's test accuracy, its strongest attack (highest AUC) and that attack's
AUC and TPR at 1% FPR with bootstrap 95% intervals (``mia_ray.audit.scores``). The
page shows them as a table and as a Pareto-front figure (accuracy up, AUC down; a
PNG beside the page and embedded in it), and ends with a plain-language answer:
which variant leaks least within a given accuracy loss, or that the intervals are too
wide to tell the candidates apart. With several seeds every number is the mean over
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

VARIANT = ["method", "sparsity", "defense", "strength"]
NUMBERS = ["test_acc", "auc", "auc_lo", "auc_hi", "tpr", "tpr_lo", "tpr_hi"]
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


def answer(table: pd.DataFrame, max_drop: float) -> str:
    """The page's last paragraph: which variant to choose, or why the data cannot say.

    ``max_drop`` is in accuracy points (1 = one percentage point).
    """
    original = table[table.original]
    pruned = table[~table.original]
    if original.empty or pruned.empty:
        return "The audit has no pruned variant (or no original) to compare."
    base = original.iloc[0]
    ok = pruned[pruned.test_acc >= base.test_acc - max_drop / 100 - 1e-9]
    if ok.empty:
        closest = pruned.loc[pruned.test_acc.idxmax()]
        return (f"No pruned variant stays within {max_drop:g} points of the original "
                f"accuracy ({base.test_acc:.3f}); the closest is {_name(closest)} at "
                f"{closest.test_acc:.3f}.")
    ok = ok.sort_values("auc")
    best = ok.iloc[0]
    ci = f"AUC {best.auc:.3f}, 95% CI [{best.auc_lo:.3f}, {best.auc_hi:.3f}]"
    tied = [r for r in ok.iloc[1:].itertuples() if r.auc_lo <= best.auc_hi]
    if tied:
        names = "; ".join(f"{_name(r)} (AUC {r.auc:.3f}, [{r.auc_lo:.3f}, {r.auc_hi:.3f}])"
                          for r in tied[:4])
        more = f" and {len(tied) - 4} more" if len(tied) > 4 else ""
        return (f"The data cannot separate the options: within {max_drop:g} points of the "
                f"original accuracy ({base.test_acc:.3f}), {_name(best)} has the lowest "
                f"AUC ({ci}), but its interval overlaps those of {names}{more}. More "
                "audited samples or more seeds would narrow the intervals.")
    return (f"Within {max_drop:g} points of the original accuracy ({base.test_acc:.3f}), "
            f"{_name(best)} leaks least ({ci}; the original: AUC {base.auc:.3f}, "
            f"[{base.auc_lo:.3f}, {base.auc_hi:.3f}]).")


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


def _row_html(r) -> str:
    cells = [
        "original" if r.original else r.method, "" if r.original else f"{r.sparsity:g}",
        r.defense if r.defense != "none" else "", f"{r.strength:g}" if r.defense != "none"
        else "", f"{r.test_acc:.3f}", r.attack,
        f"{r.auc:.3f} [{r.auc_lo:.3f}, {r.auc_hi:.3f}]",
        f"{r.tpr:.3f} [{r.tpr_lo:.3f}, {r.tpr_hi:.3f}]", "yes" if r.pareto else "",
    ]
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def write_audit_page(summary: pd.DataFrame, out_dir: str | Path, *, title: str,
                     max_drop: float = 2.0, notes: list[str] | None = None) -> Path:
    """Write ``audit.html`` and ``audit_pareto.png`` into ``out_dir``; return the page."""
    out = Path(out_dir)
    table = variants(summary)
    png = pareto_figure(table, out / "audit_pareto.png")
    data = base64.b64encode(png.read_bytes()).decode()
    head = ["method", "sparsity", "defense", "strength", "test accuracy", "strongest attack",
            "AUC [95% CI]", "TPR@1%FPR [95% CI]", "Pareto front"]
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:0.9em;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%}"
             ".answer{font-size:1.1em;background:#eef5ff;padding:0.8em;border-radius:4px}")
    parts = [
        "<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Each row is the audited model as it is (original) or pruned at one sparsity and "
        "fine-tuned on its members. Test accuracy is on held-out non-members; the strongest "
        "attack is the one with the highest AUC on that variant; intervals are stratified "
        "bootstrap 95% intervals over the audited samples.</p>",
        *[f"<p>{html.escape(n)}</p>" for n in (notes or [])],
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>",
        *[_row_html(r) for r in table.itertuples()],
        "</tbody></table>",
        "<h2>Pareto front</h2>",
        f'<figure><img src="data:image/png;base64,{data}" alt="test accuracy against the '
        'strongest attack AUC, with the Pareto front"></figure>',
        "<h2>Answer</h2>",
        f'<p class="answer" id="answer">{html.escape(answer(table, max_drop))}</p>',
        "</body></html>",
    ]
    page = out / "audit.html"
    page.write_text("\n".join(parts) + "\n")
    return page
