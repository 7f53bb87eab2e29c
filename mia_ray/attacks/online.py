"""Reference-model attacks in their online forms: ``lira_online`` and ``rmia_online``.

Online, the adversary trains N reference models on random halves of a population that
contains the audited samples, so for every audited sample about half of them are IN
models (trained on it) and half OUT. Here the draw is balanced: every audited sample
is IN for exactly N / 2 references (:func:`mia_ray.data.splits.pair_halves`), and
:class:`~mia_ray.attacks.reference.ReferenceOutputs.audit_in` says which.

**LiRA online** (Carlini et al., "Membership Inference Attacks From First
Principles", S&P 2022, section IV), as the authors' code computes it
(tensorflow/privacy, ``research/mi_lira_2021/plot.py``, ``generate_ours``). Signal:
the logit-scaled true-class confidence phi = log p_y - log(sum_{j != y} p_j)
(:func:`~mia_ray.attacks.reference.true_class_logit`, as that code's ``score.py``).
Per audited sample x, a Gaussian is fitted to the IN references' values and one to
the OUT references': centres are per-sample **medians**, mu_in(x) and mu_out(x). The
score is the log likelihood ratio of the target's value

    Lambda(x) = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)

and the decision is member iff Lambda > 0. With few references a per-sample spread is
noisy, and Carlini et al. use their "fixed variance" variant instead (better below 64
reference models): **one** sigma for both sides, s_in = s_out = the standard deviation
(numpy's default ddof = 0) of all IN values, over every sample and IN reference. Then
Lambda = (mu_in - mu_out) (2 phi - mu_in - mu_out) / (2 s^2) is linear in phi: where
mu_in > mu_out, a member further above mu_in than its references always scores
higher. It is the
default when a side has fewer than ``FIXED_VARIANCE_BELOW`` (32) values per sample,
i.e. N < 64; above, s_in(x) and s_out(x) are each sample's own IN and OUT spreads
(ddof = 0), as the same function computes them. As there, a sample's first
min-over-samples IN (and OUT) values in model order are used, which with the
balanced draw here is all N / 2 of each.

**RMIA online** (Zarifzadeh et al., "Low-Cost High-Power Membership Inference
Attacks", ICML 2024, section 3), as the authors' code computes it
(privacytrustlab/ml_privacy_meter at d32734161a, ``research/2024_rmia/main.py``,
``aggregate_signals``, online branch without augmentation). Pr(x | theta) is the
target's p_y. Online, Pr(x) is the **trimmed mean** of p_y over all N references, IN
and OUT alike (``scipy.stats.trim_mean``, ``proportiontocut`` = ``DEFAULT_TRIM`` =
0.2, the value of every online configuration published with that code; no offline
scaling a), and the same for each population sample z (drawn from the shadow pool,
which the target never saw). With the likelihood ratio LR(.) = Pr(. | theta) / Pr(.),
the score is the fraction of population samples z that x dominates,
LR(x) / LR(z) > gamma (gamma = 1, as the paper's definition; that code's
configurations use 2 together with a temperature-2 softmax and augmented queries,
neither of which is implemented here), and the decision is member iff the score
exceeds 0.5.

The papers' mirror-augmented queries are not implemented: every signal is the
model's output on the unmodified sample.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, trim_mean

from mia_ray.attacks import register_attack
from mia_ray.attacks.reference import (
    _TINY,
    DEFAULT_GAMMA,
    FIXED_VARIANCE_BELOW,
    ReferenceAttack,
    rmia_decision,
    rmia_inputs,
    true_class_logit,
    true_class_prob,
)

DEFAULT_TRIM = 0.2
"""RMIA online's trimmed mean: the ``proportiontocut`` of its authors' online configurations."""

# A floor for a side whose values agree exactly (e.g. all saturated at the clip).
_MIN_STD = 1e-6


def _side(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, m): per sample, its first m values where ``mask`` (in model order), m the
    smallest count over samples (``generate_ours``'s ``dat_in`` / ``dat_out``)."""
    m = int(mask.sum(axis=0).min())
    # A stable sort puts a sample's masked models first, each side in model order.
    order = np.argsort(~mask, axis=0, kind="stable")[:m]
    return np.take_along_axis(values, order, axis=0).T


def lira_online_scores(target_phi: np.ndarray, ref_phi: np.ndarray, ref_in: np.ndarray,
                       *, fixed_variance: bool | None = None) -> np.ndarray:
    """Log likelihood ratio of each target signal, IN Gaussian over OUT Gaussian.

    Args:
        target_phi: (n,) the target model's signal on each audited sample.
        ref_phi: (N, n) the reference models' signals on the same samples.
        ref_in: (N, n) bool, True where reference k trained on sample j. Every sample
            needs at least one IN and one OUT reference.
        fixed_variance: one sigma for both sides (the spread of all IN values);
            ``None`` chooses it when a sample has fewer than ``FIXED_VARIANCE_BELOW``
            IN or OUT references.

    Returns:
        (n,) float64 scores, higher = likelier member; > 0 where IN is likelier.
    """
    target_phi = np.asarray(target_phi, dtype=np.float64)
    ref_phi = np.asarray(ref_phi, dtype=np.float64)
    ref_in = np.asarray(ref_in, dtype=bool)
    if ref_phi.ndim != 2 or target_phi.shape != ref_phi.shape[1:] or ref_in.shape != ref_phi.shape:
        raise ValueError(f"ref_phi and ref_in must be (N, n) for target_phi of shape (n,), "
                         f"got {ref_phi.shape}, {ref_in.shape} and {target_phi.shape}")
    n_in, n_out = ref_in.sum(axis=0), (~ref_in).sum(axis=0)
    if n_in.min() < 1 or n_out.min() < 1:
        raise ValueError("every audited sample needs at least one IN and one OUT reference")
    if fixed_variance is None:
        fixed_variance = min(n_in.min(), n_out.min()) < FIXED_VARIANCE_BELOW
    if not fixed_variance and min(n_in.min(), n_out.min()) < 2:
        raise ValueError("per-sample variances need at least 2 IN and 2 OUT references "
                         "for every audited sample")
    side_in, side_out = _side(ref_phi, ref_in), _side(ref_phi, ~ref_in)
    mu_in, mu_out = np.median(side_in, axis=1), np.median(side_out, axis=1)
    if fixed_variance:
        s_in = s_out = np.maximum(side_in.std(), _MIN_STD)
    else:
        s_in = np.maximum(side_in.std(axis=1), _MIN_STD)
        s_out = np.maximum(side_out.std(axis=1), _MIN_STD)
    return norm.logpdf(target_phi, mu_in, s_in) - norm.logpdf(target_phi, mu_out, s_out)


def dominance(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of the ratios z with ratio_x / ratio_z > gamma, for each x (ratios >= 0)."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    ratio_z = np.sort(np.asarray(ratio_z, dtype=np.float64))
    # ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma, as every ratio is >= 0.
    return np.searchsorted(ratio_z, np.asarray(ratio_x) / gamma, side="left") / len(ratio_z)


def rmia_online_scores(target_p: np.ndarray, ref_p: np.ndarray, pop_target_p: np.ndarray,
                       pop_ref_p: np.ndarray, *, gamma: float = DEFAULT_GAMMA,
                       trim: float = DEFAULT_TRIM) -> np.ndarray:
    """RMIA online: the fraction of population samples z with LR(x) / LR(z) > gamma.

    Args:
        target_p: (n,) the target's true-class probability on each audited sample.
        ref_p: (N, n) every reference model's, IN and OUT alike.
        pop_target_p: (m,) the target's on population samples.
        pop_ref_p: (N, m) every reference model's on population samples.
        gamma: likelihood-ratio margin, > 0.
        trim: share of references cut at each end before Pr(.) is averaged, in
            [0, 0.5) (``scipy.stats.trim_mean``'s ``proportiontocut``).

    Returns:
        (n,) float64 scores in [0, 1].
    """
    target_p, ref_p, pop_target_p, pop_ref_p = rmia_inputs(
        target_p, ref_p, pop_target_p, pop_ref_p, models="N")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim!r}")
    ratio_x = target_p / np.maximum(trim_mean(ref_p, trim, axis=0), _TINY)
    ratio_z = pop_target_p / np.maximum(trim_mean(pop_ref_p, trim, axis=0), _TINY)
    return dominance(ratio_x, ratio_z, gamma)


class OnlineAttack(ReferenceAttack):
    """Fitted on the cell's reference models; refuses outputs without ``audit_in``."""

    learns_from = "online_references"

    def _fit(self, references) -> None:
        if references.audit_in is None:
            raise ValueError(f"{self.name} needs the reference models' inclusion "
                             "(ReferenceOutputs.audit_in): run the cell with --references N")


@register_attack("lira_online")
class LiRAOnlineAttack(OnlineAttack):
    """LiRA online on phi = logit(p_y); one fixed variance below 64 references."""

    def __init__(self, *, num_classes: int, fixed_variance: bool | None = None) -> None:
        super().__init__(num_classes=num_classes)
        self.fixed_variance = fixed_variance

    def _scores(self, target, references):
        return lira_online_scores(true_class_logit(target.prob, target.label),
                                  true_class_logit(references.audit_prob, target.label),
                                  references.audit_in,
                                  fixed_variance=self.fixed_variance)

    def _decide(self, scores):
        return np.asarray(scores) > 0.0


@register_attack("rmia_online")
class RMIAOnlineAttack(OnlineAttack):
    """RMIA online on p_y, Pr(x) the 20%-trimmed mean over all references, gamma = 1."""

    def __init__(self, *, num_classes: int, gamma: float = DEFAULT_GAMMA,
                 trim: float = DEFAULT_TRIM) -> None:
        super().__init__(num_classes=num_classes)
        self.gamma = gamma
        self.trim = trim

    def _scores(self, target, references):
        pop_label = references.population_label
        return rmia_online_scores(
            true_class_prob(target.prob, target.label),
            true_class_prob(references.audit_prob, target.label),
            true_class_prob(references.target_population_prob, pop_label),
            true_class_prob(references.population_prob, pop_label), gamma=self.gamma,
            trim=self.trim)

    def _decide(self, scores):
        return rmia_decision(scores)
