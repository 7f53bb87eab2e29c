"""Metric-based attacks: one number per sample, compared with a learned threshold.

Each attack maps a sample's features to a value that is higher for likelier members
and learns, on the shadow data, the threshold of :func:`~mia_ray.metrics.best_threshold`
(docs/method.md, "Attacks"). ``conf``, ``xent`` and ``mentr`` learn one threshold per
class, because the paper's point is that members and non-members diverge differently
from class to class; a class the shadow data lacks on either side (no member or no
non-member) falls back to the threshold learned over all classes.

**(choice)** ``score`` is the margin ``value - t[y]`` over the sample's class
threshold, not the raw value: with per-class thresholds a raw p_y of 0.8 may be
"member" in one class and "non-member" in another, and the ROC should rank samples
the way the attack decides them. ``decide`` is ``value >= t[y]``, i.e. margin >= 0.
For a single global threshold the margin ranks exactly as the raw value does.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from mia_ray.attacks import Attack, register_attack
from mia_ray.features import Features
from mia_ray.metrics import best_threshold
from mia_ray.specs import AttackSpec

# Keeps log() finite at probabilities of exactly 0 or 1; far below float32 resolution.
_TINY = 1e-30


class ThresholdAttack(Attack):
    """Shared fit/score logic; subclasses define :meth:`values` and ``per_class``."""

    per_class: ClassVar[bool] = True

    def __init__(self, *, num_classes: int) -> None:
        super().__init__(num_classes=num_classes)
        self.thresholds: np.ndarray | None = None
        self.global_threshold: float | None = None

    def values(self, features: Features) -> np.ndarray:
        """(n,) float64 attack statistic; higher means likelier member."""
        raise NotImplementedError

    def fit(self, shadow: Features, spec: AttackSpec, *,
            device: torch.device | str | None = None) -> None:
        self._check_features(shadow, "shadow")
        v, member = self.values(shadow), shadow.member
        self.global_threshold = best_threshold(v[member], v[~member])
        self.thresholds = np.full(self.num_classes, self.global_threshold)
        if self.per_class:
            for c in range(self.num_classes):
                in_class = shadow.label == c
                v_in, v_out = v[in_class & member], v[in_class & ~member]
                if len(v_in) and len(v_out):
                    self.thresholds[c] = best_threshold(v_in, v_out)

    def _sample_thresholds(self, target: Features) -> np.ndarray:
        if self.thresholds is None:
            raise RuntimeError(f"{self.name}: call fit or load_state_dict first")
        self._check_features(target, "target")
        return self.thresholds[target.label]

    def score(self, target: Features) -> np.ndarray:
        t = self._sample_thresholds(target)
        return self.values(target) - t

    def decide(self, target: Features) -> np.ndarray:
        t = self._sample_thresholds(target)
        return self.values(target) >= t

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.thresholds is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit")
        return {"thresholds": self.thresholds.copy(),
                "global_threshold": np.asarray(self.global_threshold, dtype=np.float64)}

    def load_state_dict(self, state: dict[str, np.ndarray], *,
                        spec: AttackSpec | None = None) -> None:
        thresholds = np.asarray(state["thresholds"], dtype=np.float64)
        if thresholds.shape != (self.num_classes,):
            raise ValueError(f"{self.name}: thresholds of shape {thresholds.shape}, "
                             f"expected ({self.num_classes},)")
        self.thresholds = thresholds.copy()
        self.global_threshold = float(state["global_threshold"])


@register_attack("conf")
class ConfidenceAttack(ThresholdAttack):
    """True-class confidence p_y, one threshold per class."""

    def values(self, features: Features) -> np.ndarray:
        return features.true_prob.astype(np.float64)


@register_attack("top1_conf")
class GlobalConfidenceAttack(ConfidenceAttack):
    """True-class confidence p_y with a single threshold for all classes."""

    per_class = False


@register_attack("xent")
class EntropyAttack(ThresholdAttack):
    """Negative prediction entropy, per-class thresholds (the reference's "Xent")."""

    def values(self, features: Features) -> np.ndarray:
        p = features.prob.astype(np.float64)
        return np.sum(p * np.log(np.maximum(p, _TINY)), axis=1)


@register_attack("mentr")
class ModifiedEntropyAttack(ThresholdAttack):
    """Negative modified entropy (Song & Mittal 2021), per-class thresholds.

    Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i): low when the
    true class is confident, high when a wrong class is, unlike plain entropy.
    """

    def values(self, features: Features) -> np.ndarray:
        p = features.prob.astype(np.float64)
        is_true = features.one_hot().astype(bool)
        p_y = p[is_true]
        wrong = np.where(is_true, 0.0, p * np.log(np.maximum(1.0 - p, _TINY)))
        mentr = -(1.0 - p_y) * np.log(np.maximum(p_y, _TINY)) - wrong.sum(axis=1)
        return -mentr


@register_attack("gap")
class GapAttack(Attack):
    """Yeom et al.: a correctly classified sample is called a member. Nothing to fit."""

    def _correct(self, target: Features) -> np.ndarray:
        self._check_features(target, "target")
        return target.prob.argmax(axis=1) == target.label

    def fit(self, shadow: Features, spec: AttackSpec, *,
            device: torch.device | str | None = None) -> None:
        self._check_features(shadow, "shadow")

    def score(self, target: Features) -> np.ndarray:
        return self._correct(target).astype(np.float64)

    def decide(self, target: Features) -> np.ndarray:
        return self._correct(target)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray], *,
                        spec: AttackSpec | None = None) -> None:
        pass
