"""The audit's statistics: the strongest attack chosen out of sample, and each
variant's change in leakage against the original, with paired bootstrap intervals.

Choosing the attack with the highest AUC and reporting that same AUC favours the
luckiest of twelve noisy estimates (selection bias). So the audited samples are cut
once, stratified, into two halves: the attack is chosen on the **selection** half,
and every number the audit reports (AUC, TPR@1%FPR, their intervals, the deltas) is
measured on the other, the **report** half, which played no part in the choice.

The original and every variant are attacked on the same audited samples (the audit's
split depends only on the member set and the seed), so their difference is paired:
each bootstrap resample draws members and non-members apart (stratified, as the
per-variant intervals) and takes the *same* draw for both models. The TPR at 1% FPR
and its difference are reported only where the report half holds enough non-members
for ten false positives at 1% (``metrics.min_supported_fpr``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap

from mia_ray.metrics import (
    BOOTSTRAP_RESAMPLES,
    auc_and_tpr_rows,
    bootstrap_intervals,
    min_supported_fpr,
    roc_auc,
    tpr_at_fpr,
)

MAX_ACCURACY_DROP = 2.0
"""Accuracy points a variant may lose and still be chosen (``--max-accuracy-drop``, the
audit page's answer)."""

FPR = 0.01
LEVEL = 0.95
# More resamples than the per-cell intervals: the audit computes a handful of deltas.
RESAMPLES = max(BOOTSTRAP_RESAMPLES, 1000)


def halves(member: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask of the selection half: half the members and half the
    non-members, drawn with ``seed`` (the rest is the report half)."""
    member = np.asarray(member, bool)
    rng = np.random.default_rng(seed)
    select = np.zeros(len(member), bool)
    for group in (np.flatnonzero(member), np.flatnonzero(~member)):
        select[rng.permutation(group)[: len(group) // 2]] = True
    return select


def strongest(member: np.ndarray, scores: dict[str, np.ndarray], select: np.ndarray) -> str:
    """The attack with the highest AUC on the selection half (ties: the first named)."""
    aucs = {name: roc_auc(member[select], s[select]) for name, s in scores.items()}
    return max(aucs, key=lambda name: (aucs[name], -list(aucs).index(name)))


def tpr_supported(member: np.ndarray) -> bool:
    """Whether the TPR at 1% FPR rests on at least ten non-members' worth of budget."""
    return min_supported_fpr(int((~np.asarray(member, bool)).sum())) <= FPR


def measure(member: np.ndarray, score: np.ndarray, *, seed: int) -> dict[str, float]:
    """AUC and TPR@1%FPR with stratified bootstrap 95% intervals (NaN TPR if unsupported)."""
    ci = bootstrap_intervals(member, score, resamples=RESAMPLES, seed=seed, level=LEVEL)
    out = {"auc": roc_auc(member, score), "auc_lo": ci["auc_ci_low"],
           "auc_hi": ci["auc_ci_high"], "tpr": tpr_at_fpr(member, score, FPR),
           "tpr_lo": ci["tpr_at_1pct_fpr_ci_low"], "tpr_hi": ci["tpr_at_1pct_fpr_ci_high"]}
    if not tpr_supported(member):
        out.update(tpr=np.nan, tpr_lo=np.nan, tpr_hi=np.nan)
    return out


def paired_delta(member: np.ndarray, base: np.ndarray, variant: np.ndarray, *,
                 seed: int) -> dict[str, float]:
    """``variant - base`` in AUC (and TPR@1%FPR where supported) over the same samples,
    with percentile intervals from a stratified paired bootstrap."""
    member = np.asarray(member, bool)
    pair = np.stack([np.asarray(base, np.float64), np.asarray(variant, np.float64)])
    inside, outside = pair[:, member], pair[:, ~member]

    def diff(m: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        # m, n: (2, ..., samples); row 0 the original, row 1 the variant, one draw
        # [AUC, TPR@1%FPR] of the variant minus the original's, on the same draw
        return auc_and_tpr_rows(m[1], n[1], axis) - auc_and_tpr_rows(m[0], n[0], axis)

    point = diff(inside, outside)
    result = bootstrap((inside, outside), diff, n_resamples=RESAMPLES, vectorized=True,
                       paired=False, axis=-1, confidence_level=LEVEL, method="percentile",
                       random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    out = {"delta_auc": float(point[0]), "delta_auc_lo": float(low[0]),
           "delta_auc_hi": float(high[0]), "delta_tpr_at_1pct_fpr": float(point[1]),
           "delta_tpr_at_1pct_fpr_lo": float(low[1]),
           "delta_tpr_at_1pct_fpr_hi": float(high[1])}
    if not tpr_supported(member):
        for name in ("delta_tpr_at_1pct_fpr", "delta_tpr_at_1pct_fpr_lo",
                     "delta_tpr_at_1pct_fpr_hi"):
            out[name] = np.nan
    return out
