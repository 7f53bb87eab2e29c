"""Reference-model attacks: LiRA and RMIA in their offline forms.

Both compare the target model's output on a sample with the outputs of K reference
models on the same sample. Here the reference models are the cell's K shadow
models: they were trained on the shadow half of the pool and never saw a victim
sample, so they are OUT models for every audited sample (the attacks' offline
setting). The math is in pure numpy functions; the :class:`ReferenceAttack`
subclasses are fitted on those outputs and only turn softmax outputs into signals.

**LiRA offline** (Carlini et al. 2022). Signal: the logit-scaled true-class
confidence phi = log p_y - log(sum_{j != y} p_j), i.e. log(p_y / (1 - p_y)) with the
denominator summed from the other classes, which keeps precision when p_y rounds to
1 in float32. Per sample, a Gaussian N(mu, s^2) is fitted to the K reference values;
the score is the one-sided test statistic -log P(Z > z), z = (phi_target - mu) / s,
i.e. minus the log p-value of "phi is no larger than an OUT model's". It ranks as z
does. With few references a per-sample variance is noisy (relative error about
sqrt(2 / (K - 1))), so below ``FIXED_VARIANCE_BELOW`` references one pooled variance
is used for every sample (Carlini et al.'s fixed-variance variant; pooled within
samples, since the per-sample mean is already subtracted). With K = 1 there is no
within-sample spread and the spread of the reference values over all samples is
used instead. Decision: member iff the p-value is below 0.5, i.e. phi above mu.

**RMIA offline** (Zarifzadeh et al. 2024). Pr(x | theta) is the target's p_y. Pr(x)
would average p_y over reference models half of which trained on x; offline there
are only OUT models, so Pr(x) is approximated from their mean, assuming a linear
relation Pr_IN(x) = a * Pr_OUT(x) + (1 - a):

    Pr(x) = 0.5 * ((1 + a) * mean_OUT(x) + (1 - a)),      a = ``DEFAULT_A`` = 0.3

(a = 1 trusts the OUT models fully; smaller a assumes training lifts p_y more). The
score is the fraction of population samples z with LR(x) / LR(z) > gamma (gamma = 1),
LR(.) = Pr(. | theta) / Pr(.). Population samples come from the shadow half, so the
target never saw them; Pr(z) uses, per z, only the references that did not train on z,
with the same offline formula. Decision: member iff the score exceeds 0.5, i.e. x's
likelihood ratio beats that of most population samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_ndtr

from mia_ray.attacks import Attack, register_attack
from mia_ray.features import Features
from mia_ray.specs import AttackSpec

# Keeps log() finite where float32 probabilities underflowed to 0.
_TINY = 1e-30
FIXED_VARIANCE_BELOW = 32
"""LiRA uses a pooled variance when fewer reference models than this are given."""
DEFAULT_A = 0.3
"""RMIA's offline scaling a, as Zarifzadeh et al. suggest without tuning (0.2-0.6 work)."""
DEFAULT_GAMMA = 1.0


def true_class_logit(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(sum of the other classes' p), per sample, float64.

    Args:
        prob: (..., n, C) softmax outputs; leading axes (e.g. K models) are kept.
        label: (n,) true classes.

    >>> round(float(true_class_logit(np.array([[0.8, 0.2]]), np.array([0]))[0]), 6)  # log 4
    1.386294
    """
    p = np.asarray(prob, dtype=np.float64)
    label = np.asarray(label, dtype=np.int64)
    is_true = np.arange(p.shape[-1]) == label[:, None]
    p_true = np.where(is_true, p, 0.0).sum(axis=-1)
    p_rest = np.where(is_true, 0.0, p).sum(axis=-1)
    return np.log(np.maximum(p_true, _TINY)) - np.log(np.maximum(p_rest, _TINY))


def true_class_prob(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """p_y per sample, float64; leading axes of ``prob`` are kept."""
    p = np.asarray(prob, dtype=np.float64)
    return np.take_along_axis(p, np.broadcast_to(
        np.asarray(label, dtype=np.int64)[:, None], p.shape[:-1] + (1,)), axis=-1)[..., 0]


def lira_offline_scores(target_phi: np.ndarray, ref_phi: np.ndarray, *,
                        fixed_variance: bool | None = None) -> np.ndarray:
    """-log p-value of each target signal under its Gaussian of OUT reference signals.

    Args:
        target_phi: (n,) the target model's signal on each audited sample.
        ref_phi: (K, n) the K OUT reference models' signals on the same samples.
        fixed_variance: one pooled variance for all samples; ``None`` chooses it when
            K < ``FIXED_VARIANCE_BELOW``. Per-sample variances need K >= 2.

    Returns:
        (n,) float64 scores, >= 0, higher = likelier member; log(2) at phi = mu.

    Raises:
        ValueError: shapes disagree, or per-sample variance with K < 2.
    """
    target_phi = np.asarray(target_phi, dtype=np.float64)
    ref_phi = np.asarray(ref_phi, dtype=np.float64)
    if ref_phi.ndim != 2 or target_phi.shape != ref_phi.shape[1:]:
        raise ValueError(f"ref_phi must be (K, n) for target_phi of shape (n,), got "
                         f"{ref_phi.shape} and {target_phi.shape}")
    k = ref_phi.shape[0]
    if fixed_variance is None:
        fixed_variance = k < FIXED_VARIANCE_BELOW
    mu = ref_phi.mean(axis=0)
    if fixed_variance:
        if k >= 2:
            std = np.sqrt(np.sum((ref_phi - mu) ** 2) / (ref_phi.shape[1] * (k - 1)))
        else:
            std = ref_phi.std()
    elif k < 2:
        raise ValueError("per-sample variances need at least 2 reference models")
    else:
        std = ref_phi.std(axis=0, ddof=1)
    # A floor for references that agree exactly (e.g. all saturated at the clip).
    z = (target_phi - mu) / np.maximum(std, 1e-6)
    return -log_ndtr(-z)


def lira_decision(scores: np.ndarray) -> np.ndarray:
    """Member iff the one-sided p-value is below 0.5 (phi above the OUT mean)."""
    return np.asarray(scores) > np.log(2.0)


def offline_marginal(p_out_mean: np.ndarray, a: float) -> np.ndarray:
    """RMIA's offline Pr(x) = 0.5 * ((1 + a) * mean_OUT(x) + (1 - a)).

    >>> float(offline_marginal(np.array([0.2]), 0.5)[0])
    0.4
    """
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"a must lie in [0, 1], got {a!r}")
    return 0.5 * ((1.0 + a) * np.asarray(p_out_mean, dtype=np.float64) + (1.0 - a))


def rmia_inputs(target_p, ref_p, pop_target_p, pop_ref_p, *, models: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RMIA's four probability arrays as float64, their shapes checked: ``target_p``
    (n,), ``ref_p`` (models, n), ``pop_target_p`` (m,), ``pop_ref_p`` (models, m)."""
    target_p = np.asarray(target_p, dtype=np.float64)
    ref_p = np.asarray(ref_p, dtype=np.float64)
    pop_target_p = np.asarray(pop_target_p, dtype=np.float64)
    pop_ref_p = np.asarray(pop_ref_p, dtype=np.float64)
    if ref_p.ndim != 2 or target_p.shape != ref_p.shape[1:]:
        raise ValueError(f"ref_p must be ({models}, n) for target_p of shape (n,), got "
                         f"{ref_p.shape} and {target_p.shape}")
    if pop_ref_p.shape != (ref_p.shape[0],) + pop_target_p.shape:
        raise ValueError(f"pop_ref_p must be ({models}, m) = "
                         f"{(ref_p.shape[0],) + pop_target_p.shape}, got {pop_ref_p.shape}")
    return target_p, ref_p, pop_target_p, pop_ref_p


def rmia_offline_scores(target_p: np.ndarray, ref_p: np.ndarray, pop_target_p: np.ndarray,
                        pop_ref_p: np.ndarray, *, pop_ref_out: np.ndarray | None = None,
                        a: float = DEFAULT_A, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Fraction of population samples z that x dominates: LR(x) / LR(z) > gamma.

    Args:
        target_p: (n,) the target's true-class probability on each audited sample.
        ref_p: (K, n) the OUT reference models' true-class probabilities on them.
        pop_target_p: (m,) the target's true-class probability on population samples.
        pop_ref_p: (K, m) the reference models' on population samples.
        pop_ref_out: (K, m) bool, True where reference k did not train on z; ``None``
            means none did. Samples in every reference's training set are dropped.
        a: offline scaling in [0, 1], see :func:`offline_marginal`.
        gamma: likelihood-ratio margin, > 0.

    Returns:
        (n,) float64 scores in [0, 1].
    """
    target_p, ref_p, pop_target_p, pop_ref_p = rmia_inputs(
        target_p, ref_p, pop_target_p, pop_ref_p, models="K")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    out = (np.ones(pop_ref_p.shape, dtype=bool) if pop_ref_out is None
           else np.asarray(pop_ref_out, dtype=bool))
    if out.shape != pop_ref_p.shape:
        raise ValueError(f"pop_ref_out must have shape {pop_ref_p.shape}, got {out.shape}")
    usable = out.any(axis=0)
    if not usable.any():
        raise ValueError("no population sample lies outside every reference model's training set")
    pop_out_mean = (np.where(out, pop_ref_p, 0.0).sum(axis=0)[usable] / out.sum(axis=0)[usable])
    ratio_x = target_p / np.maximum(offline_marginal(ref_p.mean(axis=0), a), _TINY)
    ratio_z = np.sort(pop_target_p[usable] / np.maximum(offline_marginal(pop_out_mean, a), _TINY))
    # LR(x) / LR(z) > gamma  <=>  LR(z) < LR(x) / gamma, as every LR is >= 0.
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)


def rmia_decision(scores: np.ndarray) -> np.ndarray:
    """Member iff x's likelihood ratio beats more than half of the population's."""
    return np.asarray(scores) > 0.5


@dataclass(frozen=True, eq=False)
class ReferenceOutputs:
    """What the reference models (and the target, on population data) output.

    ``audit_prob`` must follow the order of the target's :class:`Features` (members
    first, then non-members, as :func:`~mia_ray.features.extract_features` lays them out).
    """

    audit_prob: np.ndarray
    """(K, n, C) reference models' softmax on the audited samples."""
    population_prob: np.ndarray
    """(K, m, C) reference models' softmax on population samples."""
    population_label: np.ndarray
    """(m,) true classes of the population samples."""
    population_out: np.ndarray
    """(K, m) bool: True where reference k did not train on population sample j."""
    target_population_prob: np.ndarray
    """(m, C) the target model's softmax on the population samples."""
    audit_in: np.ndarray | None = None
    """(K, n) bool: True where reference k trained on audited sample j (the online
    setting, :mod:`mia_ray.attacks.online`); ``None``: every reference is OUT."""
    audit_inputs: np.ndarray | None = None
    """(n, d) the audited samples' inputs as the no-shadow attack reads them
    (:func:`mia_ray.attacks.qmia.input_representation`); ``None``: not given."""
    population_inputs: np.ndarray | None = None
    """(m, d) the population samples' inputs, in the same representation."""

    def __post_init__(self) -> None:
        k, n, c = np.shape(self.audit_prob)
        m = len(self.population_label)
        expected = {"population_prob": (k, m, c), "population_out": (k, m),
                    "target_population_prob": (m, c)}
        if self.audit_in is not None:
            expected["audit_in"] = (k, n)
        if (self.audit_inputs is None) != (self.population_inputs is None):
            raise ValueError("audit_inputs and population_inputs come together or not at all")
        if self.audit_inputs is not None:
            d = np.shape(self.audit_inputs)[1:]
            expected["audit_inputs"] = (n, *d)
            expected["population_inputs"] = (m, *d)
        for name, shape in expected.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, "
                                 f"expected {shape}")

    @property
    def num_references(self) -> int:
        return int(np.shape(self.audit_prob)[0])


class ReferenceAttack(Attack):
    """An attack fitted on reference-model outputs rather than on pooled shadow features.

    :meth:`fit` takes the :class:`ReferenceOutputs` of its ``learns_from`` part of the
    knowledge and keeps them (or, :meth:`_fit`, what it derives from them); ``score`` and
    ``decide`` then read only the victim's features, in the order the outputs were built
    for. The outputs come from stored signals (:mod:`mia_ray.reference_signals`) at
    every evaluation, so there is no state of its own to save.
    """

    learns_from = "references"

    def __init__(self, *, num_classes: int) -> None:
        super().__init__(num_classes=num_classes)
        self.references: ReferenceOutputs | None = None

    def fit(self, references: ReferenceOutputs, spec: AttackSpec, *,
            device: torch.device | str | None = None) -> None:
        """Keep what :meth:`score` needs from ``references``; ``spec`` and ``device`` are
        not read (nothing is trained on a device)."""
        if not isinstance(references, ReferenceOutputs):
            raise TypeError(f"{self.name} learns from Knowledge.{self.learns_from}, "
                            f"ReferenceOutputs, not {type(references).__name__}")
        self._fit(references)
        self.references = references

    def _fit(self, references: ReferenceOutputs) -> None:
        """Check or derive from ``references`` before they are kept; nothing by default."""

    def score(self, target: Features) -> np.ndarray:
        return self._scores(target, self._fitted(target))

    def decide(self, target: Features) -> np.ndarray:
        return self._decide(self.score(target))

    def _fitted(self, target: Features) -> ReferenceOutputs:
        if self.references is None:
            raise RuntimeError(f"{self.name}: call fit with the reference outputs first")
        self._check_features(target, "target")
        if np.shape(self.references.audit_prob)[1:] != target.prob.shape:
            raise ValueError(f"{self.name}: reference outputs on the audited samples have "
                             f"shape {np.shape(self.references.audit_prob)[1:]}, the target's "
                             f"{target.prob.shape}")
        return self.references

    def _scores(self, target: Features, references: ReferenceOutputs) -> np.ndarray:
        raise NotImplementedError

    def _decide(self, scores: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        raise TypeError(f"{self.name} is fitted from the stored reference signals at each "
                        "evaluation and saves no state of its own")

    def load_state_dict(self, state: dict[str, np.ndarray], *,
                        spec: AttackSpec | None = None) -> None:
        raise TypeError(f"{self.name} saves no state: fit it on ReferenceOutputs instead")


@register_attack("lira")
class LiRAAttack(ReferenceAttack):
    """LiRA offline on phi = logit(p_y); pooled variance below 32 references."""

    def __init__(self, *, num_classes: int, fixed_variance: bool | None = None) -> None:
        super().__init__(num_classes=num_classes)
        self.fixed_variance = fixed_variance

    def _scores(self, target, references):
        return lira_offline_scores(true_class_logit(target.prob, target.label),
                                   true_class_logit(references.audit_prob, target.label),
                                   fixed_variance=self.fixed_variance)

    def _decide(self, scores):
        return lira_decision(scores)


@register_attack("rmia")
class RMIAAttack(ReferenceAttack):
    """RMIA offline on p_y, a = 0.3, gamma = 1, population from the shadow half."""

    def __init__(self, *, num_classes: int, a: float = DEFAULT_A,
                 gamma: float = DEFAULT_GAMMA) -> None:
        super().__init__(num_classes=num_classes)
        self.a = a
        self.gamma = gamma

    def _scores(self, target, references):
        pop_label = references.population_label
        return rmia_offline_scores(
            true_class_prob(target.prob, target.label),
            true_class_prob(references.audit_prob, target.label),
            true_class_prob(references.target_population_prob, pop_label),
            true_class_prob(references.population_prob, pop_label),
            pop_ref_out=references.population_out, a=self.a, gamma=self.gamma)

    def _decide(self, scores):
        return rmia_decision(scores)
