"""The claims' statistics on hand-built tables: intervals, verdicts, power, and which
cells and attacks each claim's tests take (the report around them is in
``tests/test_analysis.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.claims import (
    ClaimTest,
    claim_1_leakage,
    claim_2_class_divergence,
    claim_4_ppb,
    spearman,
)
from analysis.stats import SeedInterval, paired_t_power, seeds_needed, t_interval, verdict


def test_one_seed_is_inconclusive_whatever_the_effect():
    rows = []
    for s, acc in [(0.0, 0.55), (0.5, 0.70), (0.7, 0.75), (0.9, 0.80)]:
        for attack in ("samia", "conf", "mentr"):
            rows.append(dict(cell_key=f"c{s}", dataset="digits", arch="small_cnn", seed=0,
                             knowledge="original" if s == 0 else "full",
                             method="none" if s == 0 else "l1_unstructured", sparsity=s,
                             defense="none", strength=0.0, attack=attack, accuracy=acc))
    c = claim_1_leakage(pd.DataFrame(rows))
    assert c.verdict == "inconclusive" and c.n_seeds == 1
    assert [t.reason for t in c.tests] == ["one seed", "one seed"]
    assert c.tests[0].effect.mean == pytest.approx(0.20)
    assert c.tests[1].effect.mean == pytest.approx(0.25)  # slope of 0.15, 0.20, 0.25 over 0.4


def test_t_interval_verdicts_and_spearman_exact():
    ci = t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1; with 2 degrees of freedom t_p = (2p - 1) / sqrt(2 p (1 - p)) exactly.
    t = 0.95 / np.sqrt(2 * 0.975 * 0.025)
    assert ci.mean == 2.0 and ci.n == 3 and ci.sd == 1.0
    assert ci.half_width == pytest.approx(t / np.sqrt(3), rel=1e-9)
    v, reason = verdict(ci, +1)  # 2 +- 2.484 contains 0
    assert v == "inconclusive" and "smallest detectable mean effect is 2.484" in reason
    narrow = t_interval([1.0, 1.5, 2.0])  # 1.5 +- 1.242
    assert verdict(narrow, +1)[0] == "holds" and verdict(narrow, -1)[0] == "refuted"
    assert verdict(t_interval([0.3]), +1) == ("inconclusive", "one seed")
    assert verdict(t_interval([]), +1)[0] == "no data"
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.894427, abs=1e-6)
    assert np.isnan(spearman([1, 1], [1, 2]))


# ---------------------------------------------------------------- partial and empty results

# ---------------------------------------------------------------- selection, bookkeeping, power

def _cell_row(**kw) -> dict:
    row = dict(dataset="blobs", arch="fc", num_shadows=2, method="l1_unstructured",
               sparsity=0.7, defense="none", strength=0.0, victim_test_acc=0.9,
               victim_sparsity=0.7)
    row.update(kw)
    row.setdefault("cell_key", "|".join(str(row[k]) for k in (
        "dataset", "arch", "seed", "knowledge", "method", "sparsity", "defense", "strength")))
    return row


def test_claim_1_picks_its_attacks_on_other_seeds_not_on_the_tested_values():
    """Forty pure-noise attacks: pruning changes nothing. Picking the best three on the
    tested pruned cells themselves finds a 'leak'; picking them on the other seeds does
    not."""
    rng = np.random.default_rng(3)
    seeds, names = range(8), [f"a{i:02d}" for i in range(40)]
    noise = rng.normal(0.0, 0.05, size=(len(seeds), len(names)))
    rows = []
    for s in seeds:
        for j, a in enumerate(names):
            rows.append(_cell_row(seed=s, knowledge="original", method="none", sparsity=0.0,
                                  attack=a, accuracy=0.5))
            rows.append(_cell_row(seed=s, knowledge="full", attack=a, accuracy=0.5 + noise[s, j]))
    c = claim_1_leakage(pd.DataFrame(rows))
    # In-sample choice (the old rule), by hand: top 3 by mean over all seeds.
    top = np.argsort(noise.mean(axis=0))[-3:]
    biased = t_interval(noise[:, top].mean(axis=1))
    assert biased.low > 0  # the old rule would have said "holds"
    # Out-of-sample choice, by hand: seed s uses the top 3 of the other seeds' means.
    own = [noise[s, np.argsort(np.delete(noise, s, axis=0).mean(axis=0))[-3:]].mean()
           for s in seeds]
    leakage = c.tests[0]
    assert leakage.effect.mean == pytest.approx(np.mean(own), abs=1e-12)
    assert leakage.effect.low < 0 < leakage.effect.high and leakage.verdict == "inconclusive"


def test_claim_4_strongest_attack_does_not_look_at_the_cells_own_values():
    def frame(lift_seed0_gap: bool) -> pd.DataFrame:
        rows = []
        for s in range(4):
            for a, undefended, ppb in (("conf", 0.60, 0.55), ("gap", 0.52, 0.51)):
                rows.append(_cell_row(seed=s, knowledge="full", defense="ppb", strength=0.0,
                                      attack=a, accuracy=undefended))
                acc = 0.58 if (lift_seed0_gap and s == 0 and a == "gap") else ppb
                rows.append(_cell_row(seed=s, knowledge="defense_unknown", defense="ppb",
                                      strength=4.0, attack=a, accuracy=acc,
                                      victim_test_acc=0.89))
        return pd.DataFrame(rows)

    for lifted in (False, True):
        attack = claim_4_ppb(frame(lifted)).tests[0]
        # conf, chosen on seeds 1-3, in both arms: |0.55 - 0.5| - |0.60 - 0.5| on every seed.
        assert attack.effect.mean == pytest.approx(-0.05, abs=1e-12)
        assert attack.effect.sd == pytest.approx(0.0, abs=1e-12)


def _divergence(spec: dict[str, dict[int, dict[int, float]]]) -> pd.DataFrame:
    rows = []
    for dataset, by_seed in spec.items():
        for seed, gaps in by_seed.items():
            for cls, gap in gaps.items():
                rows.append(_cell_row(dataset=dataset, seed=seed, knowledge="full",
                                      class_id=cls, conf_gap=gap, sens_gap=gap))
    return pd.DataFrame(rows)


# blobs: the same class order on every seed. Contrasts worked by hand: seed 0 picks
# class 2 over class 0 on seeds 1-2 (means .325 and .10): .40 - .10 = .30; seed 1: .30 -
# .12 = .18; seed 2: .35 - .08 = .27. Mean .25; max - min spreads .30, .18, .27, mean .25.
BLOBS = {0: {0: .10, 1: .20, 2: .40}, 1: {0: .12, 1: .22, 2: .30}, 2: {0: .08, 1: .25, 2: .35}}


def test_claim_2_pairs_each_contrast_with_its_own_seed():
    # moons: seed 0 has three classes, seed 1 only class 0, so neither has a contrast
    # (seed 0's other seed knows one class; seed 1 has one class). The old bookkeeping
    # zipped moons' lone NaN to seed 0 and lost blobs' seed-0 value with it.
    div = _divergence({"blobs": BLOBS, "moons": {0: {0: .1, 1: .5, 2: .9}, 1: {0: .3}}})
    conf = claim_2_class_divergence(div).tests[0]
    assert conf.effect.n == 3
    assert conf.effect.mean == pytest.approx(0.25, abs=1e-12)


def test_claim_2_spread_is_the_mean_over_dataset_groups():
    # moons: spreads .8 and .4 over two seeds, mean .6; blobs .25; over both groups .425.
    moons = {0: {0: .1, 1: .5, 2: .9}, 1: {0: .5, 1: .3, 2: .7}}
    c = claim_2_class_divergence(_divergence({"blobs": BLOBS, "moons": moons}))
    assert "conf_gap 0.425" in c.evidence


def test_seeds_needed_matches_published_paired_t_sample_sizes():
    # Two-sided paired t-test, alpha 0.05, power 0.8 (Cohen's tables, G*Power):
    # d = 0.5 -> 34 pairs (power 0.8078), d = 0.8 -> 15, d = 1 -> 10 (power 0.8031).
    assert seeds_needed(0.5, 1.0) == 34 and seeds_needed(0.8, 1.0) == 15
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(-0.02, 0.02) == 10
    assert paired_t_power(1.0, 10) == pytest.approx(0.8031, abs=1e-4)
    assert paired_t_power(0.5, 34) == pytest.approx(0.8078, abs=1e-4)
    # Large n: the normal approximation ((1.95996 + 0.84162) / d)^2 = 784.9 at d = 0.1,
    # and the t-test needs at most a couple more.
    assert 785 <= seeds_needed(0.1, 1.0) <= 788
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.1, 0.0) is None


def test_a_verdict_on_a_hair_is_borderline_with_the_seeds_that_settle_it():
    # Five seeds with mean 0.0105 and half-width 0.01: the low end, 0.0005, is within
    # 0.1 x 0.01 of the margin 0.
    sd = 0.01 * np.sqrt(5) / stats.t.ppf(0.975, 4)
    close = ClaimTest("x", SeedInterval(0.0105, 0.0005, 0.0205, 5, sd), +1)
    assert close.verdict == "holds" and close.borderline and close.label == "holds (borderline)"
    needed = seeds_needed(0.0105, sd)
    assert needed == close.seeds_needed and needed > 5
    assert f"about {needed - 5} more seeds ({needed} in all)" in close.reason
    clear = ClaimTest("x", SeedInterval(0.02, 0.01, 0.03, 5, sd), +1)
    assert clear.verdict == "holds" and not clear.borderline and clear.label == "holds"
    # Against a margin, the case: the interval's end -0.0303 passes -0.03 by a hair.
    kept = ClaimTest("kept", SeedInterval(-0.0403, -0.0503, -0.0303, 5, sd), +1, null=-0.03)
    assert kept.verdict == "refuted" and kept.label == "refuted (borderline)"
