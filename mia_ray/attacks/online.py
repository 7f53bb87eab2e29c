"""Reference-model attacks in their online forms: ``lira_online`` and ``rmia_online``.

Online, the adversary trains N reference models on random halves of a population that
contains the audited samples, so for every audited sample about half of them are IN
models (trained on it) and half OUT. Here the draw is balanced: every audited sample
is IN for exactly N / 2 references (:func:`mia_ray.data.splits.pair_halves`), and
:class:`~mia_ray.attacks.reference.ReferenceOutputs.audit_in` says which.

**LiRA online** (Carlini et al., "Membership Inference Attacks From First
Principles", S&P 2022, section IV). Signal: the logit-scaled true-class confidence
phi = log p_y - log(sum_{j != y} p_j) (:func:`~mia_ray.attacks.reference.true_class_logit`).
Per audited sample x, a Gaussian is fitted to the IN references' values,
N(mu_in(x), s_in(x)^2), and one to the OUT references', N(mu_out(x), s_out(x)^2). The
score is the log likelihood ratio of the target's value

    Lambda(x) = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)
              = log(s_out / s_in) - (phi - mu_in)^2 / (2 s_in^2) + (phi - mu_out)^2 / (2 s_out^2)

and the decision is member iff Lambda > 0. With few references a per-sample variance
is noisy, and Carlini et al. use one global variance per side instead (their
"fixed variance" variant, better below 64 reference models). That is the default
here when a side has fewer than ``FIXED_VARIANCE_BELOW`` (32) values per sample,
i.e. N < 64: s_in^2 is pooled within samples, sum over x and IN references of
(phi - mu_in(x))^2 divided by sum over x of (n_in(x) - 1), and s_out^2 likewise. With
one value per side (N = 2) there is no within-sample spread, and the spread of all
that side's values is used, as the LiRA reference code does for its fixed variance.

**RMIA online** (Zarifzadeh et al., "Low-Cost High-Power Membership Inference
Attacks", ICML 2024, section 3). Pr(x | theta) is the target's p_y. Online, Pr(x) is
the mean of p_y over all N references, IN and OUT alike (no offline scaling a), and
the same for each population sample z (drawn from the shadow pool, which the target
never saw; each z is IN for about half of the references). With the likelihood ratio
LR(.) = Pr(. | theta) / Pr(.), the score is the fraction of population samples z that
x dominates, LR(x) / LR(z) > gamma (gamma = 1), and the decision is member iff the
score exceeds 0.5.

The papers' mirror-augmented queries are not implemented: every signal is the
model's output on the unmodified sample.
"""

from __future__ import annotations

import numpy as np

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

# A floor for a side whose values agree exactly (e.g. all saturated at the clip).
_MIN_STD = 1e-6


def _side_stats(values: np.ndarray, mask: np.ndarray, fixed: bool
                ) -> tuple[np.ndarray, np.ndarray | float]:
    """(mean per sample, std per sample or pooled) of the values where ``mask``."""
    count = mask.sum(axis=0)
    mean = np.where(mask, values, 0.0).sum(axis=0) / count
    squares = np.where(mask, (values - mean) ** 2, 0.0)
    if not fixed:
        if count.min() < 2:
            raise ValueError("per-sample variances need at least 2 IN and 2 OUT references "
                             "for every audited sample")
        return mean, np.sqrt(squares.sum(axis=0) / (count - 1))
    if count.max() >= 2:
        return mean, float(np.sqrt(squares.sum() / (count - 1).sum()))
    return mean, float(values[mask].std())  # one value per side: the spread of them all


def lira_online_scores(target_phi: np.ndarray, ref_phi: np.ndarray, ref_in: np.ndarray,
                       *, fixed_variance: bool | None = None) -> np.ndarray:
    """Log likelihood ratio of each target signal, IN Gaussian over OUT Gaussian.

    Args:
        target_phi: (n,) the target model's signal on each audited sample.
        ref_phi: (N, n) the reference models' signals on the same samples.
        ref_in: (N, n) bool, True where reference k trained on sample j. Every sample
            needs at least one IN and one OUT reference.
        fixed_variance: one pooled variance per side; ``None`` chooses it when a
            sample has fewer than ``FIXED_VARIANCE_BELOW`` IN or OUT references.

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
    mu_in, s_in = _side_stats(ref_phi, ref_in, fixed_variance)
    mu_out, s_out = _side_stats(ref_phi, ~ref_in, fixed_variance)
    s_in, s_out = np.maximum(s_in, _MIN_STD), np.maximum(s_out, _MIN_STD)
    return (np.log(s_out) - np.log(s_in) - (target_phi - mu_in) ** 2 / (2 * s_in ** 2)
            + (target_phi - mu_out) ** 2 / (2 * s_out ** 2))


def dominance(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of the ratios z with ratio_x / ratio_z > gamma, for each x (ratios >= 0)."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    ratio_z = np.sort(np.asarray(ratio_z, dtype=np.float64))
    # ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma, as every ratio is >= 0.
    return np.searchsorted(ratio_z, np.asarray(ratio_x) / gamma, side="left") / len(ratio_z)


def rmia_online_scores(target_p: np.ndarray, ref_p: np.ndarray, pop_target_p: np.ndarray,
                       pop_ref_p: np.ndarray, *, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """RMIA online: the fraction of population samples z with LR(x) / LR(z) > gamma.

    Args:
        target_p: (n,) the target's true-class probability on each audited sample.
        ref_p: (N, n) every reference model's, IN and OUT alike.
        pop_target_p: (m,) the target's on population samples.
        pop_ref_p: (N, m) every reference model's on population samples.
        gamma: likelihood-ratio margin, > 0.

    Returns:
        (n,) float64 scores in [0, 1].
    """
    target_p, ref_p, pop_target_p, pop_ref_p = rmia_inputs(
        target_p, ref_p, pop_target_p, pop_ref_p, models="N")
    ratio_x = target_p / np.maximum(ref_p.mean(axis=0), _TINY)
    ratio_z = pop_target_p / np.maximum(pop_ref_p.mean(axis=0), _TINY)
    return dominance(ratio_x, ratio_z, gamma)


class OnlineAttack(ReferenceAttack):
    """Scored from the cell's reference models; refuses outputs without ``audit_in``."""

    online = True

    def _inclusion(self, references) -> np.ndarray:
        if references.audit_in is None:
            raise ValueError(f"{self.name} needs the reference models' inclusion "
                             "(ReferenceOutputs.audit_in): run the cell with --references N")
        return references.audit_in


@register_attack("lira_online")
class LiRAOnlineAttack(OnlineAttack):
    """LiRA online on phi = logit(p_y); fixed (pooled) variance below 64 references."""

    def __init__(self, *, num_classes: int, fixed_variance: bool | None = None) -> None:
        super().__init__(num_classes=num_classes)
        self.fixed_variance = fixed_variance

    def _scores(self, target, references):
        return lira_online_scores(true_class_logit(target.prob, target.label),
                                  true_class_logit(references.audit_prob, target.label),
                                  self._inclusion(references),
                                  fixed_variance=self.fixed_variance)

    def _decide(self, scores):
        return np.asarray(scores) > 0.0


@register_attack("rmia_online")
class RMIAOnlineAttack(OnlineAttack):
    """RMIA online on p_y, Pr(x) the mean over all references, gamma = 1."""

    def __init__(self, *, num_classes: int, gamma: float = DEFAULT_GAMMA) -> None:
        super().__init__(num_classes=num_classes)
        self.gamma = gamma

    def _scores(self, target, references):
        self._inclusion(references)
        pop_label = references.population_label
        return rmia_online_scores(
            true_class_prob(target.prob, target.label),
            true_class_prob(references.audit_prob, target.label),
            true_class_prob(references.target_population_prob, pop_label),
            true_class_prob(references.population_prob, pop_label), gamma=self.gamma)

    def _decide(self, scores):
        return rmia_decision(scores)
