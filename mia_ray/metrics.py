"""How well an attack separates members from non-members, and how the model diverges.

Pure numpy functions. ``member`` is a boolean array (True = member); ``score`` is any
real array where higher means "more likely a member"; ``decision`` is the attack's
boolean verdict. Every function refuses an audit set that lacks either members or
non-members, where the rates below are undefined.

The paper reports balanced accuracy only; AUC and TPR at low FPR follow Carlini et
al. 2022 (docs/method.md, "Metrics"); ``docs/statistics.md`` says which intervals are
computed and why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import bootstrap, mannwhitneyu
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

if TYPE_CHECKING:  # annotations only: the result tables import this module without torch
    from mia_ray.features import Features

DEFAULT_ROC_FPRS = np.logspace(-4, 0, 41)
SUPPORT_FALSE_POSITIVES = 10
"""A TPR at FPR f needs f * (non-members) >= this many false positives to be reported."""
BOOTSTRAP_RESAMPLES = 1000
"""Resamples of every within-cell interval: each 2.5% tail rests on 25 of them."""


def _check_member(member: np.ndarray, other: np.ndarray, other_name: str) -> np.ndarray:
    member = np.asarray(member)
    if member.dtype != bool:
        if not np.isin(member, (0, 1)).all():
            raise ValueError("member must be boolean (or 0/1)")
        member = member.astype(bool)
    if member.ndim != 1 or np.shape(other) != member.shape:
        raise ValueError(f"member and {other_name} must be 1-D of equal length, "
                         f"got {member.shape} and {np.shape(other)}")
    if member.all() or not member.any():
        raise ValueError("need both members and non-members")
    return member


def _check_finite(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def best_threshold(member_values: np.ndarray, nonmember_values: np.ndarray) -> float:
    """The threshold t maximising the balanced accuracy of the rule "member iff value >= t".

    Candidates are all observed values. Balanced accuracy is
    0.5 * (mean(member_values >= t) + mean(nonmember_values < t)).
    Tie rule: among candidates reaching the maximum, the smallest is returned. The
    comparison is made on integer counts, so ties are exact, not up to rounding.

    >>> best_threshold(np.array([0.6, 0.9]), np.array([0.1, 0.5]))
    0.6
    """
    m = np.sort(_check_finite(member_values, "member_values").ravel())
    n = np.sort(_check_finite(nonmember_values, "nonmember_values").ravel())
    if not len(m) or not len(n):
        raise ValueError("best_threshold needs at least one member and one non-member value")
    candidates = np.unique(np.concatenate([m, n]))
    members_at_or_above = len(m) - np.searchsorted(m, candidates, side="left").astype(np.int64)
    nonmembers_below = np.searchsorted(n, candidates, side="left").astype(np.int64)
    # Balanced accuracy times 2*|m|*|n|: integers, so equal accuracies compare equal.
    gain = members_at_or_above * len(n) + nonmembers_below * len(m)
    return float(candidates[np.argmax(gain)])  # argmax takes the first, i.e. smallest, maximum


def balanced_accuracy(member: np.ndarray, decision: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates of a boolean decision."""
    member = _check_member(member, decision, "decision")
    return float(balanced_accuracy_score(member, np.asarray(decision, dtype=bool)))


def roc_curve(member: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct score threshold, from (0, 0) to (1, 1).

    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``. Tied scores form one
    point, so a tie among members and non-members is a diagonal step of the curve.
    """
    member = _check_member(member, score, "score")
    fpr, tpr, _ = sklearn_roc_curve(member, _check_finite(score, "score"),
                                    drop_intermediate=False)
    return fpr, tpr


def roc_auc(member: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``)."""
    member = _check_member(member, score, "score")
    return float(roc_auc_score(member, _check_finite(score, "score")))


def tpr_at_fpr(member: np.ndarray, score: np.ndarray, fpr: float) -> float:
    """The largest TPR among ROC points whose FPR is at most ``fpr``.

    That is the TPR of the best single score threshold whose false-positive rate
    stays within the budget; no interpolation between points, so with few
    non-members a small budget may only admit the (0, TPR) point.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    curve_fpr, curve_tpr = roc_curve(member, score)
    return float(curve_tpr[curve_fpr <= fpr].max())


def min_supported_fpr(n_nonmembers: int) -> float:
    """The smallest FPR a TPR can be reported at: ``SUPPORT_FALSE_POSITIVES / n``.

    Below it the budget admits fewer than ten false positives, so the TPR rests on a
    handful of non-members (at 0.1% FPR on digits, on less than one) and moves by
    whole steps from one seed to the next; the report prints "n/a" there.
    """
    return SUPPORT_FALSE_POSITIVES / max(int(n_nonmembers), 1)


def _tpr_rows(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float,
              axis: int = -1) -> np.ndarray:
    """:func:`tpr_at_fpr` of every row at once, which sklearn's one-curve API cannot give.

    The best threshold admitting at most k false positives lies just above the (k+1)-th
    largest non-member score; k is the largest count whose rate k / n0, computed in
    floating point as sklearn computes the curve's rates, stays within ``fpr``.
    """
    member_scores = np.moveaxis(member_scores, axis, -1)
    nonmember_scores = np.moveaxis(nonmember_scores, axis, -1)
    n0 = nonmember_scores.shape[-1]
    k = int(np.searchsorted(np.arange(n0 + 1) / n0, fpr, side="right")) - 1
    if k >= n0:
        return np.ones(member_scores.shape[:-1])
    bar = np.partition(nonmember_scores, n0 - k - 1, axis=-1)[..., n0 - k - 1]
    return (member_scores > bar[..., None]).mean(axis=-1)


def auc_and_tpr_rows(member_scores: np.ndarray, nonmember_scores: np.ndarray,
                      axis: int = -1) -> np.ndarray:
    """AUC (the Mann-Whitney U over n1 * n0, ties counting one half) and TPR at 1% FPR
    of every row: the statistic the bootstrap evaluates on all its resamples at once."""
    u = mannwhitneyu(member_scores, nonmember_scores, axis=axis, method="asymptotic").statistic
    pairs = member_scores.shape[axis] * nonmember_scores.shape[axis]
    return np.stack([u / pairs, _tpr_rows(member_scores, nonmember_scores, 0.01, axis)])


def bootstrap_intervals(member: np.ndarray, score: np.ndarray, *,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                        level: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap intervals of the AUC and of the TPR at 1% FPR.

    Members and non-members are resampled apart (a stratified bootstrap: each
    resample keeps the audit's counts, as a rerun on the same split would), by
    ``scipy.stats.bootstrap`` with a vectorised statistic: all resamples are scored in
    one call. Seeded: the same inputs give the same interval. The interval says how
    much the number would move with another draw of audited samples from the same
    population; it says nothing about another training seed.

    Returns ``auc_ci_low``, ``auc_ci_high``, ``tpr_at_1pct_fpr_ci_low`` and
    ``tpr_at_1pct_fpr_ci_high``, the columns of the ``attacks`` table.
    """
    member = _check_member(member, score, "score")
    score = _check_finite(score, "score")
    result = bootstrap((score[member], score[~member]), auc_and_tpr_rows,
                       n_resamples=resamples, vectorized=True, paired=False,
                       confidence_level=level, method="percentile",
                       random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {"auc_ci_low": float(low[0]), "auc_ci_high": float(high[0]),
            "tpr_at_1pct_fpr_ci_low": float(low[1]), "tpr_at_1pct_fpr_ci_high": float(high[1])}


def min_resolved_fpr(n_nonmembers: int) -> float:
    """1 / (non-members): the smallest FPR that allows one false positive. Below it
    every TPR is the TPR at zero false positives, so no curve is drawn and no column
    printed there (:func:`roc_points`, ``python -m mia_ray.cell``, the report)."""
    return 1.0 / max(int(n_nonmembers), 1)


def roc_points(member: np.ndarray, score: np.ndarray,
               fprs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """TPR at fixed FPRs, for storing comparable ROC curves in the results table.

    Linear interpolation between ROC points; where the curve jumps vertically at an
    FPR, the top of the jump is used (as in :func:`tpr_at_fpr`). Unlike
    :func:`tpr_at_fpr` the interpolated values are reachable only by a randomised
    mix of two thresholds, which is the usual convention for plotted ROC curves.
    FPRs below :func:`min_resolved_fpr` are dropped: there the curve would be drawn
    from less than one false positive.

    Args:
        member: boolean membership truth.
        score: attack scores, higher = member.
        fprs: increasing FPRs in [0, 1]; default 41 log-spaced from 1e-4 to 1.

    Returns:
        (fprs, tprs) as float64 arrays of the same length, fprs >= 1 / (non-members).
    """
    fprs = DEFAULT_ROC_FPRS if fprs is None else np.asarray(fprs, dtype=np.float64)
    member = np.asarray(member, dtype=bool)
    fprs = fprs[fprs >= min_resolved_fpr(int((~member).sum())) * (1 - 1e-12)]
    curve_fpr, curve_tpr = roc_curve(member, score)
    # np.interp needs strictly increasing x: keep the last (highest) point of each FPR.
    last = np.r_[np.diff(curve_fpr) > 0, True]
    return fprs.copy(), np.interp(fprs, curve_fpr[last], curve_tpr[last])


def attack_metrics(member: np.ndarray, score: np.ndarray,
                   decision: np.ndarray) -> dict[str, float]:
    """The numbers reported for one attack on one victim."""
    return {
        "accuracy": balanced_accuracy(member, decision),
        "auc": roc_auc(member, score),
        "tpr_at_1pct_fpr": tpr_at_fpr(member, score, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(member, score, 0.001),
        "tpr_at_0.01pct_fpr": tpr_at_fpr(member, score, 0.0001),
    }


def class_gaps(features: Features, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class prediction divergence between members and non-members.

    Returns arrays of length ``num_classes``:

    - ``conf_gap``: mean member p_y - mean non-member p_y
    - ``sens_gap``: mean non-member sens_y - mean member sens_y
    - ``n_members`` / ``n_nonmembers``: sample counts per class (int64)

    Both gaps are positive when members look "more trained" (confident and stable).
    A class without members or without non-members gets NaN gaps.
    """
    if features.num_classes != num_classes:
        raise ValueError(f"features have {features.num_classes} classes, expected {num_classes}")
    label, member = features.label, features.member
    p_y = features.true_prob.astype(np.float64)
    s_y = features.true_sens.astype(np.float64)

    def class_means(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.bincount(label[mask], minlength=num_classes)
        sums = np.bincount(label[mask], weights=values[mask], minlength=num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts, counts

    p_in, n_in = class_means(p_y, member)
    p_out, n_out = class_means(p_y, ~member)
    s_in, _ = class_means(s_y, member)
    s_out, _ = class_means(s_y, ~member)
    defined = (n_in > 0) & (n_out > 0)
    return {
        "conf_gap": np.where(defined, p_in - p_out, np.nan),
        "sens_gap": np.where(defined, s_out - s_in, np.nan),
        "n_members": n_in.astype(np.int64),
        "n_nonmembers": n_out.astype(np.int64),
    }


# Percentiles of the per-class distributions stored with every cell: enough to draw
# box plots (5-95 whiskers, quartile box, median) of members vs non-members.
DIVERGENCE_QUANTILES = (5, 10, 25, 50, 75, 90, 95)


def quantile_columns() -> list[str]:
    """Column names of :func:`class_quantiles`, e.g. ``conf_member_q05``, in a fixed order."""
    return [f"{feature}_{who}_q{q:02d}" for feature in ("conf", "sens")
            for who in ("member", "nonmember") for q in DIVERGENCE_QUANTILES]


def class_quantiles(features: Features, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class distributions of p_y (``conf``) and sens_y (``sens``), by membership.

    Returns one float64 array of length ``num_classes`` per name in
    :func:`quantile_columns`: the given percentile (numpy's default linear
    interpolation) of the class's member or non-member values; NaN where the class
    has no such sample.
    """
    if features.num_classes != num_classes:
        raise ValueError(f"features have {features.num_classes} classes, expected {num_classes}")
    values = {"conf": features.true_prob.astype(np.float64),
              "sens": features.true_sens.astype(np.float64)}
    out = {name: np.full(num_classes, np.nan) for name in quantile_columns()}
    for c in range(num_classes):
        in_class = features.label == c
        for who, mask in (("member", in_class & features.member),
                          ("nonmember", in_class & ~features.member)):
            if not mask.any():
                continue
            for feature, v in values.items():
                qs = np.percentile(v[mask], DIVERGENCE_QUANTILES)
                for q, value in zip(DIVERGENCE_QUANTILES, qs):
                    out[f"{feature}_{who}_q{q:02d}"][c] = value
    return out
