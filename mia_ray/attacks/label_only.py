"""The noise-robustness label-only attack (Choquette-Choo et al., ICML 2021).

The adversary sees only predicted labels. For each sample it queries the model on M
Gaussian-perturbed copies x + sigma * u (``AttackSpec.label_queries``, noise std
``features.LABEL_NOISE_STD``) and counts how many are still labelled with the true
class: a training sample sits farther from the decision boundary, so more of its
copies stay correct. The features carry that fraction as ``robust``
(:func:`mia_ray.features.label_robustness`).

Score, as the authors' ``continuous_rand_robust`` (cchoquette/membership-inference,
attack_features.py): the fraction of the M perturbed copies labelled correctly if
the unperturbed sample is labelled correctly, else 0 (:func:`label_only_score`). One
threshold on that score, for all classes, is learned on the pooled shadow features
with :func:`~mia_ray.metrics.best_threshold`, as the paper thresholds it; the ROC
ranks samples by the score itself.
"""

from __future__ import annotations

import numpy as np

from mia_ray.attacks import register_attack
from mia_ray.attacks.threshold import ThresholdAttack
from mia_ray.features import Features


def label_only_score(correct: np.ndarray, robust: np.ndarray) -> np.ndarray:
    """The fraction of perturbed copies still correct, 0 where the sample itself is wrong.

    >>> label_only_score(np.array([True, True, False]), np.array([0.75, 0.0, 1.0])).tolist()
    [0.75, 0.0, 0.0]
    """
    correct = np.asarray(correct, dtype=bool)
    robust = np.asarray(robust, dtype=np.float64)
    if correct.shape != robust.shape:
        raise ValueError(f"correct has shape {correct.shape}, robust {robust.shape}")
    return np.where(correct, robust, 0.0)


@register_attack("label_only")
class LabelOnlyAttack(ThresholdAttack):
    """Noise robustness of the predicted label, one threshold for all classes."""

    per_class = False

    def values(self, features: Features) -> np.ndarray:
        if features.robust is None:
            raise ValueError("label_only: these features have no 'robust' column; they were "
                             "extracted without label-only queries (AttackSpec.label_queries "
                             "is read only when 'label_only' is among the attack names)")
        correct = features.prob.argmax(axis=1) == features.label
        return label_only_score(correct, features.robust)
