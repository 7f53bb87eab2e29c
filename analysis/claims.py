"""Check the paper's four claims against the result tables, with paired seeds.

Every claim is an effect the paper predicts a sign for, measured per seed as a paired
difference (the pruned victim minus the original on the same seed; PPB minus the
undefended victim; SAMIA minus the best baseline in the same cell; a class contrast
chosen on the other seeds). The per-seed values give a mean and a 95% t-interval
(:mod:`analysis.stats`). A test **holds** when the interval excludes 0 on the
paper's side, is **refuted** when it excludes 0 on the other side, and is otherwise
**inconclusive**, with the smallest mean effect the run could have detected; one
seed is always inconclusive ("one seed").

Each check's docstring *is* its definition: the report prints it under the verdict.
A claim's verdict combines its deciding tests: holds if all hold, refuted if any is
refuted, inconclusive otherwise. Tests marked as not deciding are reported beside.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import (
    PROPOSED,
    UNIT,
    Results,
    baseline_columns,
    groups,
    in_group,
    paired_cells,
    select,
    strongest_on_other_seeds,
)
from analysis.stats import (
    BORDERLINE_SHARE,
    SeedInterval,
    borderline,
    seeds_needed,
    t_interval,
    verdict,
)
from mia_ray.catalog import PAIR_ATTACKS
from mia_ray.errors import SpecError

VERDICTS = ("holds", "refuted", "inconclusive", "no data")
N_BEST_ATTACKS = 3
MAX_TEST_ACC_DROP = 0.03
PAPER_PPB_ADVERSARY = "defense_unknown"
"""The authors attack a PPB victim with undefended shadows: knowledge defense_unknown."""


@dataclass(frozen=True)
class ClaimTest:
    """One paired effect across seeds and its verdict."""

    name: str
    effect: SeedInterval
    direction: int
    """+1 if the paper predicts the effect above ``null``, -1 below."""
    null: float = 0.0
    """The margin the interval is compared with: 0, or a tolerated change."""
    deciding: bool = True
    verdict: str = field(init=False)
    reason: str = field(init=False)
    borderline: bool = field(init=False)
    """An interval end within ``BORDERLINE_SHARE`` of its half-width of the margin."""
    seeds_needed: int | None = field(init=False)
    """Seeds for 80% power to detect the observed effect (mean - null); None if unknown."""

    def __post_init__(self) -> None:
        shifted = SeedInterval(self.effect.mean - self.null, self.effect.low - self.null,
                               self.effect.high - self.null, self.effect.n, self.effect.sd)
        v, why = verdict(shifted, self.direction)
        if self.null:
            why = why.replace("excludes 0", f"excludes {self.null:g}").replace(
                "contains 0", f"contains {self.null:g}")
        needed = seeds_needed(shifted.mean, shifted.sd) if shifted.n >= 2 else None
        close = borderline(shifted)
        if close:
            extra = max(0, needed - shifted.n) if needed else 0
            more = (f"about {extra} more seed{'' if extra == 1 else 's'} ({needed} in all) "
                    "would settle it (80% power for the observed effect)" if needed
                    else "the observed effect is too small to settle with more seeds")
            why += (f"; borderline: an interval end lies within {BORDERLINE_SHARE:g} of the "
                    f"half-width of {self.null:g}, {more}")
        object.__setattr__(self, "verdict", v)
        object.__setattr__(self, "reason", why)
        object.__setattr__(self, "borderline", close)
        object.__setattr__(self, "seeds_needed", needed)

    @property
    def label(self) -> str:
        """The verdict as printed: "holds (borderline)" when it rests on a hair."""
        return f"{self.verdict} (borderline)" if self.borderline else self.verdict


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and what the data say about it."""

    number: int
    statement: str
    verdict: str
    """One of ``VERDICTS``."""
    evidence: str
    """The numbers the verdict rests on, besides the tests."""
    n_cells: int
    """How many result cells the check used."""
    tests: tuple[ClaimTest, ...] = ()
    cells: frozenset[str] = frozenset()
    """The keys of the cells the tests used: the report says which cells decided."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")

    @property
    def n_seeds(self) -> int:
        return max((t.effect.n for t in self.tests), default=0)

    @property
    def borderline(self) -> bool:
        """Whether the tests that set the verdict rest on a hair. A refuted claim is
        borderline only when every refuting test is (one clear refutation settles it);
        a claim that holds, or is inconclusive, when any deciding test with its verdict
        is (that one test flipping would change the claim's verdict)."""
        setting = [t for t in self.tests if t.deciding and t.verdict == self.verdict]
        if not setting:
            return False
        if self.verdict == "refuted":
            return all(t.borderline for t in setting)
        return any(t.borderline for t in setting)

    @property
    def label(self) -> str:
        """The verdict as a headline prints it: "(borderline)" per :attr:`borderline`."""
        return f"{self.verdict} (borderline)" if self.borderline else self.verdict


STATEMENTS = {
    1: "Pruning + fine-tuning raises membership leakage compared with the original model, "
       "more so at higher sparsity.",
    2: "The prediction divergence varies by class.",
    3: "SAMIA beats the eight baselines on pruned models.",
    4: "PPB lowers attack performance toward 50% while keeping test accuracy and sparsity.",
}


def spearman(x, y) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``); NaN if either is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def combine(tests: list[ClaimTest]) -> str:
    """holds if every deciding test holds, refuted if any is, else inconclusive."""
    deciding = [t.verdict for t in tests if t.deciding]
    if not deciding or all(v == "no data" for v in deciding):
        return "no data"
    if "refuted" in deciding:
        return "refuted"
    return "holds" if all(v == "holds" for v in deciding) else "inconclusive"


def _claim(number: int, tests: list[ClaimTest], evidence: str, cells) -> Claim:
    cells = frozenset(cells)
    return Claim(number, STATEMENTS[number], combine(tests), evidence, len(cells),
                 tuple(tests), cells)


def _no_data(number: int, why: str) -> Claim:
    return Claim(number, STATEMENTS[number], "no data", why, 0)


def per_seed(frame: pd.DataFrame, column: str) -> pd.Series:
    """Mean of ``column`` per seed: one independent value per seed."""
    return frame.groupby("seed")[column].mean()


def _best_attacks_on_other_seeds(pruned: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, arch, seed, attack): per (dataset, arch) and seed s, the
    ``N_BEST_ATTACKS`` attacks with the highest mean accuracy on the pruned cells of the
    OTHER seeds (each seed weighted once). Seed s's own values never take part in its
    choice, so noise that lifts an attack on s cannot also pick it. A (dataset, arch)
    with one seed has no other seed to choose on: every attack is kept."""
    rows = []
    for (dataset, arch), g in pruned.groupby(["dataset", "arch"]):
        table = g.groupby(["seed", "attack"])["accuracy"].mean().unstack("attack")
        for seed in table.index:
            present = table.columns[table.loc[seed].notna()]
            others = table.drop(index=seed)[present].mean(axis=0, skipna=True).dropna()
            chosen = (others.nlargest(N_BEST_ATTACKS).index if len(table) > 1
                      else present)
            rows += [(dataset, arch, seed, a) for a in chosen]
    return pd.DataFrame(rows, columns=["dataset", "arch", "seed", "attack"])


def claim_1_leakage(attacks: pd.DataFrame) -> Claim:
    """Cells: pruned victims with knowledge full and no defense (defense none, or PPB at
    strength 0), each paired with the original cell (knowledge original) of the same
    dataset, architecture and seed. For every attack, d = pruned accuracy - original
    accuracy. For seed s, the best attacks are the three with the highest mean accuracy
    on the pruned cells of the OTHER seeds (same dataset and arch; weak attacks barely
    move and would dilute the effect, and choosing on seed s itself would pick the
    attacks its noise lifted, biasing D upward); with one seed every attack is used. Per
    comparison (dataset, arch, seed, method, sparsity), D is the mean of d over them.
    Test "leakage" (deciding, paper: > 0): per seed, the mean of D over its
    comparisons. Test "sparsity slope" (deciding, paper: > 0): per seed, the
    least-squares slope of D against sparsity (needs two sparsities). Each test is
    the t-interval of its per-seed values."""
    pruned = select(attacks, knowledge="full", pruned=True, defended=False)
    orig = select(attacks, knowledge="original")
    ref = orig.groupby(["dataset", "arch", "seed", "attack"])["accuracy"].mean().rename("orig")
    pr = pruned.join(ref, on=["dataset", "arch", "seed", "attack"], how="inner")
    if pr.empty:
        return _no_data(1, "no undefended full-knowledge pruned cell has an original cell "
                           "with the same dataset, architecture and seed")
    chosen = _best_attacks_on_other_seeds(pr)
    pr = pr.merge(chosen, on=list(chosen.columns)).assign(d=lambda f: f["accuracy"] - f["orig"])
    comparisons = pr.groupby(UNIT)["d"].mean().reset_index()
    leakage = t_interval(per_seed(comparisons, "d"))
    slopes = []
    for _, g in comparisons.groupby("seed"):
        by_sparsity = g.groupby("sparsity")["d"].mean()
        slopes.append(np.polyfit(by_sparsity.index, by_sparsity.to_numpy(), 1)[0]
                      if len(by_sparsity) > 1 else np.nan)
    tests = [ClaimTest("leakage: pruned - original accuracy", leakage, +1),
             ClaimTest("sparsity slope of that difference (per unit sparsity; needs two "
                       "sparsities)",
                       t_interval(slopes), +1)]
    trend = ", ".join(f"{s:g}: {v:+.3f}"
                      for s, v in comparisons.groupby("sparsity")["d"].mean().items())
    used_orig = orig.merge(comparisons[["dataset", "arch", "seed"]].drop_duplicates())
    cells = set(pr["cell_key"]) | set(used_orig["cell_key"])
    picks = chosen.groupby(["dataset", "arch", "seed"]).size().size
    counts = chosen["attack"].value_counts()
    evidence = (f"attacks chosen on the other seeds (times chosen, of {picks} seed choices): "
                + ", ".join(f"{a} {k}" for a, k in counts.items())
                + f"; mean D by sparsity {trend}; D > 0 in "
                f"{int((comparisons['d'] > 0).sum())} of {len(comparisons)} comparisons")
    return _claim(1, tests, evidence, cells)


def _class_contrast(table: pd.DataFrame) -> dict[int, float]:
    """Per seed s (the table's index; columns are classes): gap of the class with the
    largest mean gap on the other seeds, minus the gap of the class with the smallest.
    Choosing on other seeds keeps the contrast unbiased: with no class effect its
    expectation is 0 (a max - min on the same seed would be positive by construction).
    Only classes seed s has a value for are candidates; a seed with fewer than two such
    classes (or no other seed to choose on) has no contrast and is left out."""
    values = {}
    for seed in table.index:
        own = table.loc[seed].dropna()
        others = table.drop(index=seed)[own.index].mean(axis=0, skipna=True).dropna()
        if len(others) < 2:
            continue
        values[seed] = float(own[others.idxmax()] - own[others.idxmin()])
    return values


def claim_2_class_divergence(divergence: pd.DataFrame) -> Claim:
    """Cells: pruned victims with knowledge full and no defense, from the divergence
    table. Per seed and class, the mean conf_gap over those cells (per dataset and
    arch). Test "class contrast of conf_gap" (deciding, paper: > 0): for each seed s,
    the classes with the largest and the smallest mean gap over the OTHER seeds are
    picked, and the contrast is their gap difference on seed s (averaged over dataset
    and arch groups); picked on other seeds, the contrast has expectation 0 if the gap
    does not depend on the class. The same contrast of sens_gap is reported beside
    (not deciding). With one seed the test has no value and reports the one seed's
    max - min spread (averaged over dataset and arch groups)."""
    df = select(divergence, knowledge="full", pruned=True, defended=False)
    if df.dropna(subset=["conf_gap"]).empty:
        return _no_data(2, "no undefended full-knowledge pruned cell has per-class "
                           "confidence gaps")
    tests, spreads = [], {}
    for gap, deciding in (("conf_gap", True), ("sens_gap", False)):
        per_seed_values: dict[int, list[float]] = {}
        group_spreads = []
        for _, g in df.dropna(subset=[gap]).groupby(["dataset", "arch"]):
            table = g.groupby(["seed", "class_id"])[gap].mean().unstack("class_id")
            group_spreads.append(float((table.max(axis=1) - table.min(axis=1)).mean()))
            for seed, v in _class_contrast(table).items():
                per_seed_values.setdefault(seed, []).append(v)
        spreads[gap] = float(np.mean(group_spreads)) if group_spreads else np.nan
        values = [float(np.mean(v)) for v in per_seed_values.values()]
        effect = t_interval(values) if values else t_interval([spreads[gap]])
        tests.append(ClaimTest(f"class contrast of {gap} (top minus bottom class)", effect,
                               +1, deciding=deciding))
    evidence = (f"mean max - min spread over classes within a seed (mean over dataset and "
                f"arch groups): conf_gap {spreads.get('conf_gap', float('nan')):.3f}, "
                f"sens_gap {spreads.get('sens_gap', float('nan')):.3f}")
    return _claim(2, tests, evidence, set(df["cell_key"]))


def claim_3_samia_beats_baselines(attacks: pd.DataFrame) -> Claim:
    """Cells: pruned victims with knowledge full and no defense that have a SAMIA row and
    at least one of the eight baselines. Per cell, margin = SAMIA accuracy - the best
    baseline's accuracy in that cell (the maximum over the baselines, which any one
    baseline would have to beat; a conservative reading, since the best of eight noisy
    baselines is itself lifted by noise). Test "SAMIA margin" (deciding, paper: > 0):
    per seed, the mean margin over its cells."""
    df = select(attacks, knowledge="full", pruned=True, defended=False)
    wide = df.pivot_table(index=["cell_key", "seed"], columns="attack", values="accuracy",
                          aggfunc="mean")
    base = baseline_columns(wide.columns)
    if PROPOSED not in wide.columns or not base:
        return _no_data(3, "no undefended full-knowledge pruned cell has both SAMIA and a "
                           "baseline")
    wide = wide.assign(best=wide[base].max(axis=1)).dropna(subset=[PROPOSED, "best"])
    if wide.empty:
        return _no_data(3, "no cell has both SAMIA and a baseline")
    wide = wide.assign(margin=wide[PROPOSED] - wide["best"]).reset_index()
    tests = [ClaimTest("SAMIA margin: SAMIA - best baseline accuracy",
                       t_interval(per_seed(wide, "margin")), +1)]
    wins = wide["margin"] >= 0
    evidence = (f"SAMIA >= the best baseline in {int(wins.sum())} of {len(wide)} cells; mean "
                f"SAMIA accuracy {wide[PROPOSED].mean():.3f} vs best baseline "
                f"{wide['best'].mean():.3f}")
    return _claim(3, tests, evidence, set(wide["cell_key"]))


def _ppb_pairs(attacks: pd.DataFrame, knowledge: str) -> pd.DataFrame:
    """PPB victims (strength > 0) attacked with ``knowledge``, each joined to the
    undefended victim of the same unit attacked with knowledge full."""
    best = strongest_on_other_seeds(select(attacks, knowledge=knowledge, pruned=True))
    ppb = best[(best["defense"] == "ppb") & (best["strength"] > 0)]
    full = strongest_on_other_seeds(select(attacks, knowledge="full", pruned=True,
                                           defended=False))
    ref = full.groupby(UNIT)[["accuracy", "victim_test_acc", "victim_sparsity"]].mean()
    return ppb.merge(ref.add_suffix("_ref"), left_on=UNIT, right_index=True, how="inner")


def claim_4_ppb(attacks: pd.DataFrame, max_test_drop: float = MAX_TEST_ACC_DROP) -> Claim:
    """Pairs: a PPB victim (strength > 0) and the undefended victim (PPB at 0, or no
    defense) with the same dataset, arch, seed, method and sparsity. Attack performance
    is the strongest attack's accuracy in the cell, the strongest chosen without the
    cell's own values: for a cell of seed s, the attack with the highest mean accuracy
    on the other seeds' cells of the same dataset, arch, adversary and defense point
    (with one seed, the cell's own best). The undefended victim is attacked
    with knowledge full. Per pair, e = |accuracy - 0.5| under PPB - |accuracy - 0.5|
    undefended. Test "attack toward 50%" (paper: < 0) per seed, the mean of e over its
    pairs, once for each adversary of the PPB victim: defense_unknown (undefended
    shadows; the authors' protocol and the paper's table; deciding) and full (shadows
    trained with PPB, the adaptive attacker; deciding only when the grid has no
    defense_unknown cells). Test "test accuracy kept"
    (deciding): per seed, the mean change of victim test accuracy (PPB - undefended);
    holds if the interval lies above -max_test_drop (default 0.03: a drop of at most 3
    points; the report's --max-test-drop), refuted if it lies below. Sparsity changes
    are reported beside."""
    tests, cells, lines = [], set(), []
    kept = None
    for knowledge in (PAPER_PPB_ADVERSARY, "full"):
        pairs = _ppb_pairs(attacks, knowledge)
        if pairs.empty:
            continue
        pairs = pairs.assign(
            e=(pairs["accuracy"] - 0.5).abs() - (pairs["accuracy_ref"] - 0.5).abs(),
            test_change=pairs["victim_test_acc"] - pairs["victim_test_acc_ref"],
            sparsity_change=(pairs["victim_sparsity"] - pairs["victim_sparsity_ref"]).abs())
        paper = " (the paper's table)" if knowledge == PAPER_PPB_ADVERSARY else ""
        tests.append(ClaimTest(f"attack toward 50%, adversary {knowledge}{paper}: "
                               "abs(acc - 0.5) PPB minus undefended",
                               t_interval(per_seed(pairs, "e")), -1,
                               deciding=not tests))
        undefended = select(attacks, knowledge="full", pruned=True, defended=False)
        cells |= set(pairs["cell_key"]) | set(
            undefended.merge(pairs[UNIT].drop_duplicates())["cell_key"])
        by_strength = pairs.groupby("strength")[["accuracy", "accuracy_ref"]].mean()
        lines.append(f"{knowledge}: " + "; ".join(
            f"lambda={s:g}: strongest attack {r.accuracy:.3f} vs {r.accuracy_ref:.3f} "
            "undefended" for s, r in by_strength.iterrows()))
        if kept is None:
            kept = pairs
    if kept is None:
        return _no_data(4, "no PPB cell with strength > 0 has an undefended cell at the "
                           "same dataset, arch, seed, method and sparsity")
    tests.append(ClaimTest("test accuracy kept: PPB - undefended test accuracy (margin "
                           f"-{max_test_drop:g})", t_interval(per_seed(kept, "test_change")),
                           +1, null=-max_test_drop))
    evidence = ("; ".join(lines) + f"; largest sparsity change "
                f"{kept['sparsity_change'].max():.4f}")
    return _claim(4, tests, evidence, cells)


CHECKS = (claim_1_leakage, claim_2_class_divergence, claim_3_samia_beats_baselines,
          claim_4_ppb)


def check_max_test_drop(value: float) -> float:
    """The claim-4 margin, refused unless it is a number in [0, 1)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value < 1.0:
        raise SpecError("max_test_drop", value, "a test-accuracy drop in [0, 1), e.g. 0.03")
    return float(value)


def check_claims(results: Results, max_test_drop: float = MAX_TEST_ACC_DROP) -> list[Claim]:
    """All four claims, in order, pooled over every dataset and arch of the results, on
    the cells present at every seed of their (dataset, arch) (the paired design)."""
    return _check_frames(results.attacks, results.divergence, check_max_test_drop(max_test_drop))


def _check_frames(attacks: pd.DataFrame, divergence: pd.DataFrame,
                  max_test_drop: float) -> list[Claim]:
    """The four claims on the paired cells alone (:func:`analysis.load.paired_cells`).

    The paper's adversary sees one model: pair attacks (which also query the original)
    are the report's own section (analysis/pair.py), not a claim's attack."""
    attacks = attacks[~attacks["attack"].isin(PAIR_ATTACKS)]
    attacks, divergence = paired_cells(attacks), paired_cells(divergence)
    return [claim_1_leakage(attacks), claim_2_class_divergence(divergence),
            claim_3_samia_beats_baselines(attacks), claim_4_ppb(attacks, max_test_drop)]


def check_claims_by_group(results: Results, max_test_drop: float = MAX_TEST_ACC_DROP
                          ) -> dict[tuple[str, str], list[Claim]]:
    """The four claims on each (dataset, arch) alone, in :func:`groups` order: the paper
    states its findings per dataset, and pooling can hide a claim that holds on one and
    fails on another."""
    max_test_drop = check_max_test_drop(max_test_drop)
    found = sorted(set(groups(results.attacks)) | set(groups(results.divergence)))
    return {g: _check_frames(in_group(results.attacks, g), in_group(results.divergence, g),
                             max_test_drop) for g in found}


def disagreements(by_group: dict[tuple[str, str], list[Claim]]) -> list[str]:
    """One sentence per claim that holds on some (dataset, arch) and is refuted on
    another, naming both sides."""
    out = []
    for i, number in enumerate(sorted(STATEMENTS)):
        named = {v: [f"{d} / {a}" for (d, a), claims in by_group.items()
                     if claims[i].verdict == v] for v in ("holds", "refuted")}
        if named["holds"] and named["refuted"]:
            out.append(f"Claim {number} holds on {', '.join(named['holds'])} and is refuted "
                       f"on {', '.join(named['refuted'])}.")
    return out


def check_definition(number: int) -> str:
    """The docstring of claim ``number``'s check, as one paragraph."""
    return " ".join(inspect.getdoc(CHECKS[number - 1]).split())
