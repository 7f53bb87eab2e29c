"""Write ``report.md``, ``report.html`` and ``figures/*.png`` for a results folder.

Usage: ``python -m analysis.report RESULTS_DIR`` (or :func:`generate_report`). The
report states the four claims with their verdicts and the tests behind them, shows
every figure with a caption that carries its numbers, prints the comparison tables,
and lists the grid coordinates that have no results yet, so a partial sweep still
gives a complete report of what it has.

The HTML is rendered from the markdown by :mod:`analysis.markdown_html`, with the
figures embedded as data URIs so the file can be mailed or opened on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis.beyond import beyond_section
from analysis.claims import (
    MAX_TEST_ACC_DROP,
    Claim,
    check_claims,
    check_claims_by_group,
    check_max_test_drop,
)
from analysis.claims_section import cell_axis, claims_section
from analysis.dp_epsilon import epsilon_section
from analysis.figures import make_figures
from analysis.load import (
    COORDS,
    TABLES,
    Results,
    defense_tradeoff,
    expected_grid,
    groups,
    in_group,
    load_results,
    missing_cells,
    order_attacks,
    samia_vs_baselines,
    select,
    strongest_with_strength,
)
from analysis.markdown_html import markdown_to_html
from analysis.markdown_table import markdown_table
from analysis.online import online_section
from analysis.pair import pair_section
from analysis.stats import format_interval, format_pm, seed_intervals
from mia_ray.errors import SpecError
from mia_ray.metrics import (
    BOOTSTRAP_RESAMPLES,
    SUPPORT_FALSE_POSITIVES,
    min_resolved_fpr,
    min_supported_fpr,
)

MAX_MISSING_ROWS = 200


# ---------------------------------------------------------------- markdown pieces

PM_NOTE = ("a ± b is the mean over seeds and the half-width of its 95% t-interval over "
           "seeds (each seed first averaged over what the table does not show); one seed "
           "prints the bare mean.")


def _pm_frame(df: pd.DataFrame, rows: list[str], metric: str = "accuracy") -> pd.DataFrame:
    """Rows ``rows``, columns attack: "mean ± half-width" strings over seeds."""
    intervals = seed_intervals(df, rows + ["attack"], metric)
    cells = pd.Series({k: format_pm(v) for k, v in intervals.items()})
    if cells.empty:
        return pd.DataFrame()
    cells.index.names = rows + ["attack"]
    wide = cells.unstack("attack")
    # Breadth cells rest on fewer seeds than the core: every row says how many.
    return wide[order_attacks(wide.columns)].assign(seeds=df.groupby(rows)["seed"].nunique())


def _tables_section(results: Results) -> list[str]:
    a = results.attacks
    out = ["## Tables", ""]
    table = samia_vs_baselines(a)
    if not table.empty:
        shown = _pm_frame(select(a, knowledge="full", pruned=True, defended=False),
                          ["dataset", "arch", "method"]).reindex(table.index)
        vals = shown[[c for c in table.columns if c != "best"] + ["seeds"]].reset_index()
        bold = {(i, b) for i, b in enumerate(table["best"])}
        out += ["### SAMIA vs the eight baselines", "",
                "Balanced attack accuracy, knowledge full, undefended pruned victims, mean over "
                "sparsities and seeds; the best mean of each row in bold; " + PM_NOTE, "",
                markdown_table(vals, bold), ""]
    for g in groups(a):
        ga = in_group(a, g)
        pruned = select(ga, knowledge="full", pruned=True, defended=False)
        if not pruned.empty:
            t = _pm_frame(pruned, ["method", "sparsity"]).reset_index()
            orig = select(ga, knowledge="original")
            if not orig.empty:
                ref = _pm_frame(orig.assign(sparsity=0.0), ["method", "sparsity"])
                t = pd.concat([ref.reset_index().assign(method="original"), t],
                              ignore_index=True)
            t = t[["method", "sparsity"] + order_attacks(
                [c for c in t.columns if c not in ("method", "sparsity")])]
            out += [f"### Attack accuracy by method and sparsity ({g[0]} / {g[1]})", "",
                    "Knowledge full, undefended victims; the first row is the original "
                    "(unpruned) model; " + PM_NOTE, "", markdown_table(t), ""]
            out += _auc_and_tpr_table(pruned, orig, g)
        tr = defense_tradeoff(ga)
        if not tr.empty and (tr.index.get_level_values("strength") > 0).any():
            strongest = strongest_with_strength(ga)
            acc = seed_intervals(strongest, ["method", "strength"], "accuracy")
            test = seed_intervals(strongest, ["method", "strength"], "victim_test_acc")
            tr = tr.assign(victim_test_acc=[format_pm(test[k]) for k in tr.index],
                           attack_accuracy=[format_pm(acc[k]) for k in tr.index],
                           seeds=strongest.groupby(["method", "strength"])["seed"].nunique())
            out += [f"### PPB defense ({g[0]} / {g[1]})", "",
                    "Knowledge full; strongest attack per cell, mean over sparsities and "
                    "seeds; strength 0 is plain fine-tuning; " + PM_NOTE, "",
                    markdown_table(tr.reset_index()), ""]
        out += epsilon_section(ga, g)  # analysis/dp_epsilon.py
    victims = results.models[results.models["role"] == "victim"]
    if not victims.empty:
        v = victims.assign(gap=victims["train_acc"] - victims["test_acc"])
        v = v[["dataset", "arch", "seed", "method", "sparsity", "defense", "strength",
               "train_acc", "test_acc", "gap", "measured_sparsity", "epochs"]]
        out += ["### Victim models", "",
                "Train and test accuracy, generalisation gap (train - test) and achieved "
                "sparsity of every victim model built.", "",
                markdown_table(v.sort_values(["dataset", "arch", "seed", "sparsity", "method",
                                              "defense", "strength"]).reset_index(drop=True)),
                ""]
    return out


def _tpr_cell(interval, n_nonmembers: float, fpr: float) -> str:
    """The TPR, or "n/a (k non-members)" where the FPR admits under ten false positives."""
    if pd.isna(n_nonmembers):
        return format_pm(interval)
    if fpr < min_supported_fpr(int(n_nonmembers)):
        return f"n/a ({int(n_nonmembers)} non-members)"
    return format_pm(interval)


def _auc_and_tpr_table(pruned: pd.DataFrame, orig: pd.DataFrame,
                       group: tuple[str, str]) -> list[str]:
    """Per attack: AUC and TPR at 1% / 0.1% FPR over seeds, with the median width of the
    within-cell bootstrap interval of the AUC; original model and highest sparsity."""
    smax = pruned["sparsity"].max()
    rows = []
    for label, part in (("original", orig), (f"pruned, sparsity {smax:g}",
                                             pruned[pruned["sparsity"] == smax])):
        if part.empty:
            continue
        auc = seed_intervals(part, ["attack"], "auc")
        t1 = seed_intervals(part, ["attack"], "tpr_at_1pct_fpr")
        t01 = seed_intervals(part, ["attack"], "tpr_at_01pct_fpr")
        width = (part["auc_ci_high"] - part["auc_ci_low"]).groupby(part["attack"]).median()
        n0 = part.groupby("attack")["n_nonmembers"].min()
        for attack in order_attacks(part["attack"].unique()):
            k = (attack,)
            rows.append((label, attack, format_pm(auc[k]),
                         "" if pd.isna(width.get(attack)) else f"{width[attack]:.3f}",
                         _tpr_cell(t1[k], n0.get(attack), 0.01),
                         _tpr_cell(t01[k], n0.get(attack), 0.001)))
    if not rows:
        return []
    frame = pd.DataFrame(rows, columns=["victim", "attack", "AUC", "AUC bootstrap width",
                                        "TPR at 1% FPR", "TPR at 0.1% FPR"])
    n0 = int(pd.concat([pruned, orig])["n_nonmembers"].max())
    dropped = ""
    if 0.001 < min_resolved_fpr(n0):
        frame = frame.drop(columns="TPR at 0.1% FPR")
        dropped = (f" No column for 0.1% FPR: with at most {n0} non-members it allows no "
                   "false positive, so it would repeat the TPR at zero false positives; a "
                   "low-FPR column is printed only where it allows at least one.")
    return [f"### AUC and low-FPR TPR ({group[0]} / {group[1]})", "",
            "Knowledge full, undefended victims (all methods). AUC and TPR: " + PM_NOTE
            + " AUC bootstrap width: the median over cells of the 95% percentile-bootstrap "
            f"interval over the audited samples ({BOOTSTRAP_RESAMPLES} stratified resamples). "
            f"A TPR at an FPR below {SUPPORT_FALSE_POSITIVES} / (non-members) rests on fewer "
            f"than {SUPPORT_FALSE_POSITIVES} false positives and is shown as n/a." + dropped,
            "", markdown_table(frame), ""]


def _chance_section(attacks: pd.DataFrame) -> list[str]:
    """Attacks whose accuracy is not told from 0.5 over seeds, said in words."""
    used = pd.concat([select(attacks, knowledge="full", pruned=True, defended=False),
                      select(attacks, knowledge="original")])
    if used.empty:
        return []
    intervals = seed_intervals(used, ["attack"], "accuracy")
    chance = [(k[0], v) for k, v in intervals.items()
              if v.n >= 2 and v.low <= 0.5 <= v.high]
    if not chance:
        return []
    order = order_attacks([k[0] for k in intervals])
    listed = "; ".join(f"{a} {format_interval(v)}"
                       for a, v in sorted(chance, key=lambda kv: order.index(kv[0])))
    return ["## Attacks no better than chance", "",
            "On the undefended full-knowledge and original cells, the 95% t-interval over "
            "seeds of these attacks' balanced accuracy contains 0.5, so the run cannot tell "
            f"them from guessing: {listed}. Their numbers elsewhere in this report are "
            "chance-level, not findings.", ""]


def _missing_section(results: Results) -> list[str]:
    missing, empty = missing_cells(results)
    n_expected = len(expected_grid(results))
    out = ["## Missing grid coordinates", "",
           "The expected grid is the product of the axis values seen in the results: per "
           "(dataset, arch, shadows) and seed, one original cell plus every combination of "
           "the non-original knowledge settings, methods, sparsities and (defense, strength) "
           "pairs, less the methods an architecture cannot take.", ""]
    if empty:
        out += [f"Tables with no rows at all: {', '.join(f'`{t}`' for t in empty)}.", ""]
    if missing.empty:
        out += [f"No cell of the {n_expected} expected is missing from the tables that have "
                "rows.", ""]
        return out
    out += [f"{len(missing)} of {n_expected} expected cells are missing from at least one "
            "table" + (f" (the first {MAX_MISSING_ROWS} listed)"
                       if len(missing) > MAX_MISSING_ROWS else "") + ":", "",
            markdown_table(missing.head(MAX_MISSING_ROWS)), ""]
    return out


def build_markdown(results: Results, figures: list[tuple[str, Path, str]],
                   claims: list[Claim], report_dir: Path,
                   by_group: dict[tuple[str, str], list[Claim]] | None = None) -> str:
    counts = ", ".join(f"{len(results.table(t))} {t} rows" for t in TABLES)
    axes = []
    for t in ("attacks", "divergence", "roc"):
        df = results.table(t)
        if not df.empty:
            axes = [f"{c}: {', '.join(map(cell_axis, sorted(df[c].unique())))}"
                    for c in COORDS if c not in ("num_shadows",)]
            break
    lines = ["# Membership inference on pruned models: results", "",
             f"Results folder `{results.root}`: {results.n_cells()} cells ({counts}).", "",
             _protocol_line(results.attacks), ""]
    if axes:
        lines += ["Axes present: " + "; ".join(axes) + ".", ""]
    lines += ["Means are over seeds and over every axis a figure or table does not show. A "
              "victim is undefended when its defense is none or PPB at strength 0 (plain "
              "fine-tuning); knowledge \"original\" is the unpruned model attacked with "
              "unpruned shadows.", ""]
    lines += claims_section(claims, by_group, results)
    lines += online_section(results.attacks)  # beyond the paper: analysis/online.py
    lines += pair_section(results.attacks)  # beyond the paper: analysis/pair.py
    lines += beyond_section(results.attacks)  # label-only and no-shadow: analysis/beyond.py
    lines += _chance_section(results.attacks)
    lines += ["## Figures", ""]
    if not figures:
        lines += ["No figure: the results have no cell to draw.", ""]
    for n, (title, path, caption) in enumerate(figures, 1):
        rel = path.relative_to(report_dir).as_posix()
        lines += [f"### {title}", "", f"![{title}]({rel})", "", f"*Figure {n}.* {caption}", ""]
    lines += _tables_section(results)
    lines += _missing_section(results)
    return "\n".join(lines).rstrip() + "\n"


def _protocol_line(attacks: pd.DataFrame) -> str:
    """The header line that says how sure the numbers can be: seeds and attack epochs."""
    if attacks.empty:
        return "No attack results yet."
    seeds = sorted(attacks["seed"].unique())
    epochs = sorted(attacks["attack_epochs"].dropna().astype(int).unique())
    said = (", ".join(map(str, epochs)) if epochs
            else "not recorded (results written before the attack_epochs column)")
    short = " (shorter than the paper's 100)" if epochs and min(epochs) < 100 else ""
    return (f"**Protocol:** {len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
            f"({', '.join(map(str, seeds))}); learned attacks trained for {said} epochs"
            f"{short}. Intervals: across seeds, 95% Student t; within a cell, 95% "
            "percentile bootstrap over the audited samples (docs/statistics.md).")


# ---------------------------------------------------------------- entry points

def generate_report(results_dir: str | Path,
                    max_test_drop: float = MAX_TEST_ACC_DROP) -> Path:
    """Write report.md, report.html and figures/ into ``results_dir`` (a local folder);
    return the path of report.md. ``max_test_drop`` is claim 4's test-accuracy margin."""
    max_test_drop = check_max_test_drop(max_test_drop)
    root = Path(results_dir)
    results = load_results(root)
    root.mkdir(parents=True, exist_ok=True)
    figures = make_figures(results, root / "figures")
    # A rerun on fewer results must not leave an earlier run's figures beside the new ones.
    made = {p for _, path, _ in figures for p in (path, path.with_suffix(".csv"))}
    for old in (root / "figures").glob("*"):
        if old.suffix in (".png", ".csv") and old not in made:
            old.unlink()
    md = build_markdown(results, figures, check_claims(results, max_test_drop), root,
                        check_claims_by_group(results, max_test_drop))
    md_path = root / "report.md"
    md_path.write_text(md)
    (root / "report.html").write_text(markdown_to_html(md, root, title=f"report: {root.name}"))
    return md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="folder holding the attacks/, divergence/, roc/ "
                                            "and models/ tables")
    parser.add_argument("--max-test-drop", type=float, default=MAX_TEST_ACC_DROP,
                        help="claim 4's margin: the largest drop of victim test accuracy "
                             f"PPB may cost and still keep it (default {MAX_TEST_ACC_DROP:g})")
    args = parser.parse_args(argv)
    try:
        check_max_test_drop(args.max_test_drop)
    except SpecError as exc:
        parser.error(str(exc))
    try:
        path = generate_report(args.results_dir, args.max_test_drop)
    except SpecError as exc:  # e.g. a folder that mixes two experiments' settings
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
