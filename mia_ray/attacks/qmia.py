"""Quantile-regression membership inference, QMIA (Bertran et al., NeurIPS 2023).

An attack that trains no model of the target's architecture and needs no shadow
model. The adversary queries the target model on public data it knows to be
non-members, and learns, from the inputs alone, how high the target's score on a
non-member x would be at most, bar a fraction alpha: a quantile regressor predicts
the (1 - alpha) quantile q(x, y) of the score. A sample whose score exceeds its own
predicted quantile is called a member. The threshold is thus per sample, set by how
hard the sample looks, which no pooled threshold can do.

Choices here (docs/method.md, "QMIA"):

- **Score**: phi = log p_y - log(1 - p_y), the true-class logit, as the authors'
  tabular code scores a sample (amazon-science/quantile-mia,
  tabular_QMIA/qmia_ACS.py) and as LiRA does
  (:func:`~mia_ray.attacks.reference.true_class_logit`).
- **Public data**: the whole shadow half of the pool, which the victim never saw
  (``ReferenceOutputs.target_population_prob``: the target's softmax on it). No
  victim member is ever in it; shadows and the knowledge setting play no part.
- **Regressor**: scikit-learn's ``HistGradientBoostingRegressor(loss="quantile")`` on
  the input's representation (:func:`input_representation`) and the label (a
  categorical feature), with fixed hyper-parameters and no early stopping, so it is
  deterministic.
- **ROC**: from the margin phi - q(x, y) at one alpha (``QMIA_ALPHA``), not from
  sweeping alpha; the decision is margin > 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from mia_ray.attacks import register_attack
from mia_ray.attacks.reference import ReferenceAttack, ReferenceOutputs, true_class_logit
from mia_ray.features import Features

QMIA_ALPHA = 0.05
"""The target false-positive rate: the regressor predicts the 95% quantile of a
non-member's score (docs/method.md, "QMIA", says why)."""
MAX_INPUT_DIM = 256
"""Inputs wider than this enter the regressor through a fixed random projection."""
_PROJECTION_SEED = 20230703  # fixed: the victim's and the public data's inputs share one map
_MAX_CATEGORIES = 255  # HistGradientBoosting's limit for a categorical feature


def input_representation(x: np.ndarray) -> np.ndarray:
    """(n, d) float32: the flattened inputs, or a fixed Gaussian projection of them to
    ``MAX_INPUT_DIM`` dimensions when wider (the same matrix for every call of one width,
    so audited and public samples land in one space)."""
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    d = flat.shape[1]
    if d <= MAX_INPUT_DIM:
        return flat
    rng = np.random.default_rng([_PROJECTION_SEED, d])
    projection = rng.standard_normal((d, MAX_INPUT_DIM)).astype(np.float32)
    return flat @ (projection / np.float32(np.sqrt(MAX_INPUT_DIM)))


def _design(inputs: np.ndarray, label: np.ndarray) -> np.ndarray:
    return np.column_stack([np.asarray(inputs, dtype=np.float64),
                            np.asarray(label, dtype=np.float64)])


def fit_quantile_regressor(inputs: np.ndarray, label: np.ndarray, score: np.ndarray, *,
                           alpha: float, num_classes: int) -> HistGradientBoostingRegressor:
    """The (1 - alpha) quantile of ``score`` given (input, label), learned on non-members."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    design = _design(inputs, label)
    categorical = [design.shape[1] - 1] if num_classes <= _MAX_CATEGORIES else None
    model = HistGradientBoostingRegressor(
        loss="quantile", quantile=1.0 - alpha, max_iter=200, learning_rate=0.05,
        max_leaf_nodes=15, min_samples_leaf=20, early_stopping=False,
        categorical_features=categorical, random_state=0)
    return model.fit(design, np.asarray(score, dtype=np.float64))


def qmia_scores(score: np.ndarray, quantile: np.ndarray) -> np.ndarray:
    """The margin of each sample's score over its predicted quantile (the ROC's ranking).

    >>> qmia_scores(np.array([2.0, 0.5]), np.array([1.0, 1.0])).tolist()
    [1.0, -0.5]
    """
    score = np.asarray(score, dtype=np.float64)
    quantile = np.asarray(quantile, dtype=np.float64)
    if score.shape != quantile.shape:
        raise ValueError(f"score has shape {score.shape}, quantile {quantile.shape}")
    return score - quantile


def qmia_decision(margins: np.ndarray) -> np.ndarray:
    """Member iff the score exceeds its predicted (1 - alpha) quantile."""
    return np.asarray(margins) > 0.0


@register_attack("qmia")
class QMIAAttack(ReferenceAttack):
    """Quantile regression on the target's scores on public non-members (no shadows).

    It is fitted on :class:`ReferenceOutputs` only for the target's outputs and the inputs
    on the public data (the regressor trains in :meth:`fit`) and for the audited samples'
    inputs; the reference models' outputs are not read.
    """

    def __init__(self, *, num_classes: int, alpha: float = QMIA_ALPHA) -> None:
        super().__init__(num_classes=num_classes)
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        self.alpha = alpha
        self.regressor: HistGradientBoostingRegressor | None = None

    def _fit(self, references: ReferenceOutputs) -> None:
        if references.audit_inputs is None or references.population_inputs is None:
            raise ValueError("qmia needs the inputs of the audited and the public samples "
                             "(ReferenceOutputs.audit_inputs and population_inputs)")
        public_label = references.population_label
        self.regressor = fit_quantile_regressor(
            references.population_inputs, public_label,
            true_class_logit(references.target_population_prob, public_label),
            alpha=self.alpha, num_classes=self.num_classes)

    def _scores(self, target: Features, references: ReferenceOutputs) -> np.ndarray:
        quantile = self.regressor.predict(_design(references.audit_inputs, target.label))
        return qmia_scores(true_class_logit(target.prob, target.label), quantile)

    def _decide(self, scores: np.ndarray) -> np.ndarray:
        return qmia_decision(scores)
