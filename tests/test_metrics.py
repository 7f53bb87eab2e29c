import numpy as np
import pytest
from scipy.stats import norm

from mia_ray.features import Features
from mia_ray.metrics import (
    DEFAULT_ROC_FPRS,
    attack_metrics,
    balanced_accuracy,
    best_threshold,
    bootstrap_intervals,
    class_gaps,
    class_quantiles,
    min_supported_fpr,
    quantile_columns,
    roc_auc,
    roc_curve,
    roc_points,
    tpr_at_fpr,
)


def test_best_threshold_separable():
    assert best_threshold(np.array([0.6, 0.9]), np.array([0.1, 0.5])) == 0.6


def test_best_threshold_tie_takes_smallest():
    # t=1 and t=3 both reach balanced accuracy 0.75.
    assert best_threshold(np.array([1.0, 3.0]), np.array([0.0, 2.0])) == 1.0
    # Members below non-members: t=0 (all called member) and t=3 tie at 0.5.
    assert best_threshold(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0


def test_best_threshold_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.integers(0, 8, rng.integers(1, 15)).astype(float)
        n = rng.integers(0, 8, rng.integers(1, 15)).astype(float)
        candidates = np.unique(np.concatenate([m, n]))
        acc = [0.5 * ((m >= t).mean() + (n < t).mean()) for t in candidates]
        best = max(acc)
        expected = min(t for t, a in zip(candidates, acc) if np.isclose(a, best))
        assert best_threshold(m, n) == expected


def test_best_threshold_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        best_threshold(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        best_threshold(np.array([np.nan]), np.array([1.0]))


def _random_audit(seed: int, n: int = 500, ties: bool = False):
    rng = np.random.default_rng(seed)
    member = rng.random(n) < 0.4
    score = rng.normal(size=n) + 0.8 * member
    if ties:
        score = np.round(score, 1)
    return member, score


def _auc_by_pairs(member_scores, nonmember_scores):
    """The AUC's definition: P(member score > non-member score) + P(equal) / 2, pair by pair."""
    m, n = member_scores[:, None], nonmember_scores[None, :]
    return ((m > n).sum() + 0.5 * (m == n).sum()) / (len(member_scores) * len(nonmember_scores))


def _tpr_by_thresholds(member_scores, nonmember_scores, budget):
    """The best "member iff score >= t" rule whose false-positive rate stays within budget."""
    best = 0.0
    for t in np.r_[member_scores, nonmember_scores, np.inf]:
        if (nonmember_scores >= t).mean() <= budget:
            best = max(best, (member_scores >= t).mean())
    return best


@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_tpr_equal_their_definitions_one_curve_and_all_resamples(ties):
    from mia_ray.metrics import _tpr_rows, auc_and_tpr_rows

    for seed in range(4):
        member, score = _random_audit(seed, n=300, ties=ties)
        inside, outside = score[member], score[~member]
        auc = _auc_by_pairs(inside, outside)
        assert roc_auc(member, score) == pytest.approx(auc, abs=1e-12)
        # The bootstrap's vectorised statistic, on the sample and on a reversed copy.
        rows = auc_and_tpr_rows(np.stack([inside, inside[::-1]]), np.stack([outside] * 2))
        np.testing.assert_allclose(rows[0], [auc, auc], atol=1e-12)
        assert rows[1][0] == _tpr_by_thresholds(inside, outside, 0.01)
        for budget in (0.0, 0.001, 0.01, 0.1, 0.5, 1.0):
            expected = _tpr_by_thresholds(inside, outside, budget)
            assert tpr_at_fpr(member, score, budget) == pytest.approx(expected, abs=1e-12)
            assert _tpr_rows(inside[None], outside[None], budget)[0] == pytest.approx(
                expected, abs=1e-12)


def test_tpr_at_fpr_and_roc_points_by_hand():
    member = np.array([True, True, True, False, False])
    score = np.array([0.9, 0.8, 0.3, 0.85, 0.2])
    # ROC points: (0,0) (0,1/3) (.5,1/3) (.5,2/3) (.5,1) (1,1)
    fpr, tpr = roc_curve(member, score)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert tpr_at_fpr(member, score, 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr(member, score, 0.49) == pytest.approx(1 / 3)
    assert tpr_at_fpr(member, score, 0.5) == 1.0
    assert roc_auc(member, score) == pytest.approx(4 / 6)  # 4 of 6 pairs ranked right
    # Two non-members: no point below FPR 1/2, where less than one false positive fits.
    fprs, tprs = roc_points(member, score, np.array([0.0, 0.25, 0.5, 1.0]))
    np.testing.assert_allclose(fprs, [0.5, 1.0])
    np.testing.assert_allclose(tprs, [1.0, 1.0])
    fprs, tprs = roc_points(member, score)
    np.testing.assert_array_equal(fprs, DEFAULT_ROC_FPRS[DEFAULT_ROC_FPRS >= 0.5])
    assert fprs[-1] == 1.0 and (np.diff(tprs) >= 0).all()


def test_roc_points_start_where_one_false_positive_is_allowed():
    rng = np.random.default_rng(0)
    member = np.r_[np.ones(404, bool), np.zeros(404, bool)]
    score = rng.normal(size=808) + member
    fprs, tprs = roc_points(member, score)
    # 1 / 404 = 0.00248: the default grid's points 1e-4 .. 10^-2.7 are gone.
    assert fprs[0] >= 1 / 404 and fprs[0] == pytest.approx(10 ** -2.6)
    np.testing.assert_array_equal(fprs, DEFAULT_ROC_FPRS[DEFAULT_ROC_FPRS >= 1 / 404])
    member = np.r_[np.ones(10, bool), np.zeros(20000, bool)]
    fprs, _ = roc_points(member, rng.normal(size=20010))
    assert len(fprs) == 41  # 20,000 non-members resolve 1e-4


def test_balanced_accuracy_is_the_mean_of_the_two_rates():
    rng = np.random.default_rng(1)
    member = rng.random(300) < 0.3
    decision = rng.random(300) < 0.5
    tpr = decision[member].mean()
    tnr = (~decision[~member]).mean()
    assert balanced_accuracy(member, decision) == pytest.approx((tpr + tnr) / 2, abs=1e-12)
    # 1 of 2 members found, both non-members rejected: (1/2 + 1) / 2.
    assert balanced_accuracy(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])) == 0.75


def test_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both"):
        balanced_accuracy(np.array([True, True]), np.array([True, False]))
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.array([False, False]), np.array([0.1, 0.2]))


def test_attack_metrics_perfect_attack():
    member = np.array([True] * 1000 + [False] * 1000)
    score = np.r_[np.linspace(1, 2, 1000), np.linspace(0, 0.9, 1000)]
    out = attack_metrics(member, score, score >= 1)
    assert out == {"accuracy": 1.0, "auc": 1.0, "tpr_at_1pct_fpr": 1.0, "tpr_at_0.1pct_fpr": 1.0,
                   "tpr_at_0.01pct_fpr": 1.0}


def test_class_gaps_by_hand():
    # class 0: members p_y .9 .7, non-member .5; sens_y members .1 .3, non-member .6
    # class 1: members only -> NaN; class 2: no samples -> NaN
    prob = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    sens = np.array([[0.1, 9, 9], [0.3, 9, 9], [0.6, 9, 9], [9, 0.2, 9]])
    f = Features(prob=prob, sens=sens, label=[0, 0, 0, 1], member=[True, True, False, True])
    gaps = class_gaps(f, 3)
    np.testing.assert_allclose(gaps["conf_gap"], [0.3, np.nan, np.nan], rtol=1e-6)
    np.testing.assert_allclose(gaps["sens_gap"], [0.4, np.nan, np.nan], rtol=1e-6)
    np.testing.assert_array_equal(gaps["n_members"], [2, 1, 0])
    np.testing.assert_array_equal(gaps["n_nonmembers"], [1, 0, 0])
    with pytest.raises(ValueError):
        class_gaps(f, 4)


def test_class_quantiles_by_hand():
    # class 0: members p_y .9 .7 .5 (sens .1 .2 .6), non-member .4; class 1: members only;
    # class 2: no samples.
    prob = np.array([[0.9, 0.1, 0], [0.7, 0.3, 0], [0.5, 0.5, 0], [0.4, 0.6, 0],
                     [0.2, 0.8, 0]])
    sens = np.array([[0.1, 9, 9], [0.2, 9, 9], [0.6, 9, 9], [0.3, 9, 9], [9, 0.05, 9]])
    f = Features(prob=prob, sens=sens, label=[0, 0, 0, 0, 1],
                 member=[True, True, True, False, True])
    q = class_quantiles(f, 3)
    assert list(q) == quantile_columns() and len(q) == 2 * 2 * 7
    # Linear interpolation over the sorted values .5 .7 .9: the 25th percentile is .6.
    np.testing.assert_allclose([q[f"conf_member_q{p:02d}"][0] for p in (5, 25, 50, 75, 95)],
                               [0.52, 0.6, 0.7, 0.8, 0.88], rtol=1e-6)
    np.testing.assert_allclose([q[f"sens_member_q{p:02d}"][0] for p in (10, 50, 90)],
                               [0.12, 0.2, 0.52], rtol=1e-6)
    np.testing.assert_allclose(q["conf_nonmember_q05"], [0.4, np.nan, np.nan], rtol=1e-6)
    np.testing.assert_allclose(q["sens_member_q95"][1:], [0.05, np.nan], rtol=1e-6)
    with pytest.raises(ValueError):
        class_quantiles(f, 4)
def _two_gaussians(seed: int, n: int, d: float):
    rng = np.random.default_rng(seed)
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    return member, np.r_[rng.normal(d, 1.0, n), rng.normal(0.0, 1.0, n)]


def test_bootstrap_auc_interval_covers_the_analytic_auc():
    # Members N(d, 1), non-members N(0, 1): AUC = Phi(d / sqrt 2) = 0.7602 for d = 1.
    d, n = 1.0, 400
    true_auc = norm.cdf(d / np.sqrt(2))
    member, score = _two_gaussians(0, n, d)
    ci = bootstrap_intervals(member, score, seed=0)
    assert ci["auc_ci_low"] < true_auc < ci["auc_ci_high"]
    assert ci["auc_ci_low"] < roc_auc(member, score) < ci["auc_ci_high"]
    # Width near 2 * 1.96 * the AUC's standard error (about 0.017 here, Hanley-McNeil).
    assert 0.04 < ci["auc_ci_high"] - ci["auc_ci_low"] < 0.09


@pytest.mark.slow
def test_bootstrap_auc_interval_covers_the_truth_in_nearly_all_of_40_audits():
    d, n = 1.0, 400
    true_auc = norm.cdf(d / np.sqrt(2))
    # Over 40 independent audits a 95% interval misses the truth a couple of times:
    # 34 or fewer hits out of 40 has probability < 2% for a correct interval.
    hits = 0
    for seed in range(1, 41):
        member, score = _two_gaussians(seed, n, d)
        ci = bootstrap_intervals(member, score, seed=seed)
        hits += ci["auc_ci_low"] <= true_auc <= ci["auc_ci_high"]
    assert hits >= 35


def test_bootstrap_tpr_interval_brackets_the_point_and_is_seeded():
    member, score = _random_audit(3, n=2000, ties=True)
    ci = bootstrap_intervals(member, score, seed=5)
    point = tpr_at_fpr(member, score, 0.01)
    assert ci["tpr_at_1pct_fpr_ci_low"] <= point <= ci["tpr_at_1pct_fpr_ci_high"]
    assert ci == bootstrap_intervals(member, score, seed=5)
    assert ci != bootstrap_intervals(member, score, seed=6)


@pytest.mark.parametrize("n_nonmembers", [450, 900, 1000, 3000])
def test_at_the_smallest_supported_fpr_the_threshold_admits_ten_false_positives(n_nonmembers):
    # Non-members score 0..n-1, each member half a step above one of them: the best
    # threshold admitting k false positives lets k + 1 members through (TPR (k+1)/n).
    nonmembers = np.arange(n_nonmembers, dtype=float)
    member = np.r_[np.ones(n_nonmembers, bool), np.zeros(n_nonmembers, bool)]
    score = np.r_[nonmembers + 0.5, nonmembers]
    fpr = min_supported_fpr(n_nonmembers)
    assert tpr_at_fpr(member, score, fpr) == pytest.approx(11 / n_nonmembers)
    # Any smaller budget admits at most 9.
    assert tpr_at_fpr(member, score, np.nextafter(fpr, 0)) == pytest.approx(10 / n_nonmembers)


@pytest.mark.slow
def test_bootstrap_interval_ends_do_not_depend_on_the_bootstrap_seed():
    # The Monte Carlo error of a 2.5% percentile from B resamples is about
    # sqrt(0.025 * 0.975 / B) / density: for this AUC (sd 0.017, Hanley-McNeil) 0.0014 at
    # B = 1,000 and 0.0032 at the 200 resamples used before. Over 20 bootstrap seeds on
    # one audit, the AUC interval's ends must move like the former.
    member, score = _two_gaussians(0, 400, 1.0)
    ends = np.array([[ci["auc_ci_low"], ci["auc_ci_high"]] for ci in (
        bootstrap_intervals(member, score, seed=s) for s in range(20))])
    assert ends.std(axis=0, ddof=1).mean() < 0.0022


def test_the_cell_table_prints_tpr_at_01pct_only_where_one_false_positive_fits():
    from mia_ray.cell import format_rows

    row = {"attack": "lira", "accuracy": 0.6, "auc": 0.65, "tpr_at_1pct_fpr": 0.05,
           "tpr_at_01pct_fpr": 0.01}
    small = format_rows([{**row, "n_nonmembers": 404}])
    assert "tpr@0.1%" not in small and "with 404 non-members it allows no false" in small
    large = format_rows([{**row, "n_nonmembers": 2000}])
    assert "tpr@0.1%" in large and "0.010" in large and "allows no" not in large
