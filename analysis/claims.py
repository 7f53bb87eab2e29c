"""Check the paper's four claims against the result tables.

Each check is a function of the frames whose docstring *is* the test: the report
prints it next to the verdict, so a reader sees exactly what was computed. Every
check answers "no data" when no cell bears on it, instead of guessing.

Shares of cells are judged with one rule throughout: more than half is "holds",
at most a quarter is "does not hold", in between is "mixed".
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import (
    PROPOSED,
    UNIT,
    Results,
    baseline_columns,
    select,
    strongest_per_cell,
    undefended_mask,
)

VERDICTS = ("holds", "does not hold", "mixed", "no data")
HOLDS_ABOVE = 0.5
FAILS_AT_OR_BELOW = 0.25
N_BEST_ATTACKS = 3
MAX_TEST_ACC_DROP = 0.03
MAX_SPARSITY_CHANGE = 0.01


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and what the data say about it."""

    number: int
    statement: str
    verdict: str
    """One of ``VERDICTS``."""
    evidence: str
    """The numbers the verdict rests on."""
    n_cells: int
    """How many result cells the check used."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


STATEMENTS = {
    1: "Pruning + fine-tuning raises membership leakage compared with the original model, "
       "more so at higher sparsity.",
    2: "The prediction divergence varies by class.",
    3: "SAMIA beats the eight baselines on pruned models.",
    4: "PPB lowers attack performance toward 50% while keeping test accuracy and sparsity.",
}


def share_verdict(share: float) -> str:
    if share > HOLDS_ABOVE:
        return "holds"
    return "does not hold" if share <= FAILS_AT_OR_BELOW else "mixed"


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either is constant."""
    rx = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _no_data(number: int, why: str) -> Claim:
    return Claim(number, STATEMENTS[number], "no data", why, 0)


def claim_1_leakage(attacks: pd.DataFrame) -> Claim:
    """Cells: pruned victims with knowledge full and no defense (defense none, or PPB at
    strength 0), each paired with the original cell (knowledge original) of the same
    dataset, architecture and seed. For every attack, d = pruned accuracy - original
    accuracy. The best attacks are the three with the highest mean accuracy on those
    pruned cells (weak attacks barely move and would dilute the effect); per
    comparison (dataset, arch, seed, method, sparsity), D is the mean of d over them.
    Part A: D > 0 in more than half of the comparisons. Part B: the Spearman rank
    correlation between sparsity and D is > 0 (needs at least two sparsities).
    Holds if both parts hold, mixed if one does, does not hold if neither."""
    pruned = select(attacks, knowledge="full", pruned=True, defended=False)
    orig = select(attacks, knowledge="original")
    ref = orig.groupby(["dataset", "arch", "seed", "attack"])["accuracy"].mean().rename("orig")
    pr = pruned.join(ref, on=["dataset", "arch", "seed", "attack"], how="inner")
    if pr.empty:
        return _no_data(1, "no undefended full-knowledge pruned cell has an original cell "
                           "with the same dataset, architecture and seed")
    best = pr.groupby("attack")["accuracy"].mean().nlargest(N_BEST_ATTACKS).index
    pr = pr[pr["attack"].isin(best)].assign(d=lambda f: f["accuracy"] - f["orig"])
    per_unit = pr.groupby(["dataset", "arch", "seed", "method", "sparsity", "attack"])["d"].mean()
    D = per_unit.groupby(UNIT).mean().reset_index()
    share = float((D["d"] > 0).mean())
    rho = spearman(D["sparsity"], D["d"])
    part_a, part_b = share > HOLDS_ABOVE, bool(rho > 0)
    verdict = {2: "holds", 1: "mixed", 0: "does not hold"}[part_a + part_b]
    by_s = D.groupby("sparsity")["d"].mean()
    trend = ", ".join(f"{s:g}: {v:+.3f}" for s, v in by_s.items())
    used_orig = orig.merge(D[["dataset", "arch", "seed"]].drop_duplicates())
    n = pr["cell_key"].nunique() + used_orig["cell_key"].nunique()
    evidence = (f"best attacks {', '.join(best)}; pruned minus original accuracy D > 0 in "
                f"{int((D['d'] > 0).sum())} of {len(D)} comparisons (share {share:.3f}); "
                f"mean D by sparsity {trend}; Spearman(sparsity, D) = {rho:.3f}"
                + ("" if D["sparsity"].nunique() > 1 else " (one sparsity: part B untestable)"))
    return Claim(1, STATEMENTS[1], verdict, evidence, n)


def claim_2_class_divergence(divergence: pd.DataFrame) -> Claim:
    """Cells: pruned victims with knowledge full and no defense, from the divergence
    table. Per cell, over the classes with a defined gap (at least two needed): spread
    = max - min of conf_gap across classes, scale = mean |conf_gap|. The cell's
    divergence varies by class if spread > scale, i.e. the classes differ by more than
    the typical gap itself. Holds if more than half of the cells vary, does not hold
    if at most a quarter do, mixed in between. The same share for sens_gap is reported
    alongside but does not enter the verdict."""
    df = select(divergence, knowledge="full", pruned=True, defended=False)
    shares, ratios = {}, {}
    for gap in ("conf_gap", "sens_gap"):
        g = df.dropna(subset=[gap]).groupby("cell_key")[gap]
        stats = pd.DataFrame({"spread": g.max() - g.min(), "scale": g.apply(
            lambda v: v.abs().mean()), "n": g.size()})
        stats = stats[stats["n"] >= 2]
        varies = stats["spread"] > stats["scale"]
        shares[gap] = (float(varies.mean()) if len(stats) else float("nan"), int(varies.sum()),
                       len(stats))
        ratios[gap] = float((stats["spread"] / stats["scale"]).median()) if len(stats) else 0.0
    share, k, n = shares["conf_gap"]
    if n == 0:
        return _no_data(2, "no undefended full-knowledge pruned cell has per-class "
                           "confidence gaps for two or more classes")
    s_share, s_k, s_n = shares["sens_gap"]
    evidence = (f"conf_gap spread (max - min over classes) exceeds its mean |gap| in {k} of "
                f"{n} cells (share {share:.3f}; median spread/scale {ratios['conf_gap']:.2f}); "
                f"sens_gap: {s_k} of {s_n} cells")
    return Claim(2, STATEMENTS[2], share_verdict(share), evidence, n)


def claim_3_samia_beats_baselines(attacks: pd.DataFrame) -> Claim:
    """Cells: pruned victims with knowledge full and no defense that have a SAMIA row and
    at least one of the eight baselines. SAMIA wins a cell if its accuracy is >= the
    best baseline's (the maximum over the baselines in that cell). Share = wins /
    cells. Holds if the share is above 0.5, does not hold if at most 0.25, mixed in
    between (one of nine equally good attacks would be best in about 11% of cells)."""
    df = select(attacks, knowledge="full", pruned=True, defended=False)
    wide = df.pivot_table(index="cell_key", columns="attack", values="accuracy", aggfunc="mean")
    base = baseline_columns(wide.columns)
    if PROPOSED not in wide.columns or not base:
        return _no_data(3, "no undefended full-knowledge pruned cell has both SAMIA and a "
                           "baseline")
    wide = wide.dropna(subset=[PROPOSED])
    best_base = wide[base].max(axis=1)
    wide, best_base = wide[best_base.notna()], best_base[best_base.notna()]
    if wide.empty:
        return _no_data(3, "no cell has both SAMIA and a baseline")
    wins = wide[PROPOSED] >= best_base
    share = float(wins.mean())
    evidence = (f"SAMIA >= the best baseline in {int(wins.sum())} of {len(wide)} cells "
                f"(share {share:.3f}); mean SAMIA accuracy {wide[PROPOSED].mean():.3f} vs "
                f"best baseline {best_base.mean():.3f} (margin "
                f"{(wide[PROPOSED] - best_base).mean():+.3f})")
    return Claim(3, STATEMENTS[3], share_verdict(share), evidence, len(wide))


def claim_4_ppb(attacks: pd.DataFrame) -> Claim:
    """Pairs: a PPB victim (strength > 0) and the strength-0 victim (PPB at 0, or no
    defense) with the same dataset, arch, seed, method and sparsity, both attacked
    with knowledge full (the attacker knows the defense). Attack performance is the
    strongest attack's accuracy in the cell. A pair passes if (a) |accuracy - 0.5| is
    smaller under PPB, (b) victim test accuracy drops by at most 0.03 (3 points), and
    (c) victim sparsity changes by at most 0.01. Holds if more than half of the pairs
    pass, does not hold if at most a quarter do, mixed in between."""
    best = strongest_per_cell(select(attacks, knowledge="full", pruned=True))
    ref = best[undefended_mask(best)].groupby(UNIT)[
        ["accuracy", "victim_test_acc", "victim_sparsity"]].mean()
    ppb = best[(best["defense"] == "ppb") & (best["strength"] > 0)]
    pairs = ppb.merge(ref.add_suffix("_ref"), left_on=UNIT, right_index=True, how="inner")
    if pairs.empty:
        return _no_data(4, "no PPB cell with strength > 0 has a strength-0 cell at the same "
                           "dataset, arch, seed, method and sparsity (knowledge full)")
    closer = (pairs["accuracy"] - 0.5).abs() < (pairs["accuracy_ref"] - 0.5).abs()
    drop = pairs["victim_test_acc_ref"] - pairs["victim_test_acc"]
    kept_acc = drop <= MAX_TEST_ACC_DROP
    kept_sparsity = (pairs["victim_sparsity"] - pairs["victim_sparsity_ref"]).abs() \
        <= MAX_SPARSITY_CHANGE
    passes = closer & kept_acc & kept_sparsity
    share = float(passes.mean())
    by_strength = pairs.assign(fall=drop).groupby("strength").agg(
        acc=("accuracy", "mean"), ref=("accuracy_ref", "mean"), fall=("fall", "mean"))
    detail = "; ".join(f"lambda={r.Index:g}: strongest attack {r.acc:.3f} vs {r.ref:.3f} at 0, "
                       f"test accuracy drop {r.fall:+.3f}" for r in by_strength.itertuples())
    evidence = (f"{int(passes.sum())} of {len(pairs)} pairs pass (share {share:.3f}): closer "
                f"to 0.5 in {int(closer.sum())}, test accuracy kept in {int(kept_acc.sum())}, "
                f"sparsity kept in {int(kept_sparsity.sum())}; {detail}")
    n = pairs["cell_key"].nunique() + best[undefended_mask(best)].merge(
        pairs[UNIT].drop_duplicates(), on=UNIT)["cell_key"].nunique()
    return Claim(4, STATEMENTS[4], share_verdict(share), evidence, n)


CHECKS = (claim_1_leakage, claim_2_class_divergence, claim_3_samia_beats_baselines,
          claim_4_ppb)


def check_claims(results: Results) -> list[Claim]:
    """All four claims, in order."""
    return [claim_1_leakage(results.attacks), claim_2_class_divergence(results.divergence),
            claim_3_samia_beats_baselines(results.attacks), claim_4_ppb(results.attacks)]


def check_definition(number: int) -> str:
    """The docstring of claim ``number``'s check, as one paragraph."""
    return " ".join(inspect.getdoc(CHECKS[number - 1]).split())
