"""The report's claims section: each claim's verdict, its tests and the cells behind it.

Part of ``report.md`` (:mod:`analysis.report` assembles it); the verdicts themselves come
from :mod:`analysis.claims`.
"""

from __future__ import annotations

import pandas as pd

from analysis.claims import Claim, check_definition, disagreements
from analysis.load import Results, paired_cells
from analysis.markdown_table import markdown_table


def claims_section(claims: list[Claim],
                   by_group: dict[tuple[str, str], list[Claim]] | None = None,
                   results: Results | None = None) -> list[str]:
    """The "Claims" section as markdown lines: how claims are tested, the verdicts table,
    the per-(dataset, arch) table when ``by_group`` is given, then each claim's tests."""
    out = ["## Claims", "",
           "Each claim is tested on paired differences across seeds (the same seed's "
           "pruned and original victims, PPB and undefended victims, SAMIA and the best "
           "baseline). Effect: the mean of the per-seed differences; 95% CI: Student's "
           "t-interval over seeds, mean +- t(0.975, n-1) * sd / sqrt(n). A test **holds** "
           "when the interval excludes 0 in the paper's direction, is **refuted** when it "
           "excludes 0 the other way, and is **inconclusive** otherwise: the note then "
           "gives the smallest mean effect this run could have detected (the interval's "
           "half-width). One seed is always inconclusive. A verdict whose interval end lies "
           "within 0.1 of the half-width of the margin is marked **borderline**: a hair of "
           "noise would flip it. \"Seeds for 80% power\" is the fewest seeds whose paired "
           "t-test detects the observed effect with probability 0.8 (noncentral t, "
           "docs/statistics.md). A claim holds when all its deciding tests hold and is "
           "refuted when one of them is.", ""]
    if results is not None:
        out += _paired_paragraph(results)
    summary = pd.DataFrame([(c.number, c.statement, c.label, c.n_seeds, c.n_cells)
                            for c in claims],
                           columns=["#", "claim", "verdict", "seeds", "cells"])
    out += [markdown_table(summary), ""]
    if by_group:
        out += _by_group_table(claims, by_group)
    for c in claims:
        out += [f"### Claim {c.number}: {c.statement}", "",
                f"**Verdict: {c.verdict}** ({c.n_seeds} seeds, {c.n_cells} cells).", ""]
        if c.tests:
            rows = [(t.name, "yes" if t.deciding else "no", _signed(t.effect.mean),
                     _ci(t.effect), t.effect.n, t.label, _needed(t), t.reason)
                    for t in c.tests]
            out += [markdown_table(pd.DataFrame(rows, columns=[
                "test", "deciding", "effect", "95% CI", "seeds", "verdict",
                "seeds for 80% power", "note"])), ""]
        out += [f"{c.evidence}.", ""]
        if results is not None and c.cells:
            out += [f"*Decided by* {_describe_cells(results, c)}.", ""]
        out += [f"*Test.* {check_definition(c.number)}", ""]
    return out


def _paired_paragraph(results: Results) -> list[str]:
    """Which cells the claims are tested on: the paired core, and what is left to the
    figures and tables."""
    attacks = results.attacks
    if attacks.empty:
        return []
    paired = paired_cells(attacks)
    n_all, n_paired = attacks["cell_key"].nunique(), paired["cell_key"].nunique()
    seeds = ", ".join(map(str, sorted(attacks["seed"].unique())))
    text = (f"The claims are tested on the {n_paired} of {n_all} cells whose grid point is "
            f"present at every seed of its (dataset, arch) (seeds {seeds}): the paired "
            "design, in which every seed averages over the same cells.")
    if n_paired < n_all:
        text += (f" The other {n_all - n_paired} cells, run at fewer seeds (the breadth), "
                 "feed the figures and tables only, whose `seeds` columns say how many "
                 "seeds each value rests on.")
    return [text, ""]


def _describe_cells(results: Results, claim: Claim) -> str:
    """The cells behind a claim, by axis: how many, and the values of each axis."""
    table = results.divergence if claim.number == 2 else results.attacks
    cells = table[table["cell_key"].isin(claim.cells)].drop_duplicates("cell_key")
    axes = []
    for column in ("dataset", "arch", "seed", "knowledge", "method", "sparsity"):
        values = sorted(cells[column].unique())
        axes.append(f"{column} {', '.join(map(cell_axis, values))}")
    points = sorted({(d, float(st)) for d, st in zip(cells["defense"], cells["strength"])})
    axes.append("defense " + ", ".join(f"{d} {st:g}" for d, st in points))
    return f"{len(cells)} cells: " + "; ".join(axes)


def _needed(test) -> str:
    if test.effect.n < 2:
        return "n/a"
    return "n/a (no effect)" if test.seeds_needed is None else str(test.seeds_needed)


def _headline(c: Claim):
    """The claim's first deciding test: the effect the per-group table shows."""
    return next((t for t in c.tests if t.deciding), None)


def _by_group_table(pooled: list[Claim],
                    by_group: dict[tuple[str, str], list[Claim]]) -> list[str]:
    """Claims x (dataset, arch): each claim's headline effect, interval and verdict per
    group, then pooled over every group."""
    rows = []
    for i, c in enumerate(pooled):
        for (dataset, arch), claims in [*by_group.items(), (("pooled", "all"), pooled)]:
            t = _headline(claims[i])
            rows.append((c.number, f"{dataset} / {arch}" if dataset != "pooled" else "pooled",
                         _signed(t.effect.mean) if t else "n/a", _ci(t.effect) if t else "n/a",
                         t.effect.n if t else 0, claims[i].label))
    out = ["### Claims by dataset and architecture", "",
           "Each claim checked on one (dataset, arch) alone, then pooled (the per-seed "
           "values averaged over every group first). Effect and CI are of the claim's first "
           "deciding test (claim 1: leakage; 2: conf_gap contrast; 3: SAMIA margin; 4: "
           "attack toward 50%); the verdict combines all its deciding tests.", "",
           markdown_table(pd.DataFrame(rows, columns=["#", "dataset / arch", "effect",
                                                      "95% CI", "seeds", "verdict"])), ""]
    split = disagreements(by_group)
    out += [" ".join(split) if split else "No claim holds on one (dataset, arch) and is "
            "refuted on another.", ""]
    return out


def _signed(v: float) -> str:
    return "n/a" if pd.isna(v) else f"{v:+.4f}"


def _ci(interval) -> str:
    if interval.n < 2:
        return "n/a (one seed)" if interval.n == 1 else "n/a"
    return f"[{interval.low:+.4f}, {interval.high:+.4f}]"


def cell_axis(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
