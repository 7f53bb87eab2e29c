"""Pair attacks: the adversary queries the pruned victim AND its unpruned original.

A dense model and its pruned deployment are often both public. Each pair attack reads,
for every sample, the pruned model's features and the original's on the same sample
(:class:`PairedFeatures`), and learns from shadows built the same way: each shadow's
own original (the model it was pruned from) beside the pruned shadow
(docs/method.md, "The original and its pruned version together"). With a = log p_y of
the original and b = log p_y of the pruned model (p_y the true-class confidence):

``pair_sum``   a + b, one threshold per class. Two readings of one signal: both models
               were fitted to the members, and if their per-sample noise were
               independent with equal spread, the likelihood-ratio direction would
               weigh them equally.
``pair_diff``  +-(b - a), one threshold per class. What pruning and fine-tuning
               changed: the sample's difficulty, which both models share, cancels (the
               original acts as a reference model). Its sign is not known in advance
               (pruning costs the members the confidence they were fitted to; the
               fine-tuning on the members restores it), so the shadows choose it.
``pair_nn``    the MLP of ``nn_cls`` on [pruned probabilities, original probabilities,
               one-hot label]: any combination of the two, learned on the shadows.

Which of the sum and the difference is stronger depends on how the two models' noise
correlates, which the source (CompLeak, 2025) does not settle for one-shot pruning
with fine-tuning; both are offered and measured (docs/beyond_the_paper.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mia_ray.attacks import register_attack
from mia_ray.attacks.learned import MLPAttack
from mia_ray.attacks.threshold import _TINY, ThresholdAttack
from mia_ray.features import Features
from mia_ray.metrics import roc_auc
from mia_ray.specs import AttackSpec


@dataclass
class PairedFeatures(Features):
    """The pruned model's features (the inherited fields) and its original's.

    Every other attack reads it as the pruned model's plain :class:`Features`.
    """

    original: Features | None = None
    """The unpruned original's features on the same samples, in the same order."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.original is None:
            raise ValueError("PairedFeatures needs the original model's features")
        if len(self.original) != len(self):
            raise ValueError(f"the original's features cover {len(self.original)} samples, "
                             f"the pruned model's {len(self)}")
        if not (np.array_equal(self.original.label, self.label)
                and np.array_equal(self.original.member, self.member)):
            raise ValueError("the original's and the pruned model's features must be of "
                             "the same samples (labels and membership differ)")

    @classmethod
    def pair(cls, pruned: Features, original: Features) -> PairedFeatures:
        # Every field of the pruned model's features travels (``robust`` too), so the
        # single-model attacks read a pair exactly as they read the pruned model alone.
        own = {f.name: getattr(pruned, f.name) for f in dataclasses.fields(Features)}
        return cls(**own, original=original)

    def subset(self, index: np.ndarray) -> PairedFeatures:
        return self.pair(super().subset(index), self.original.subset(index))

    @staticmethod
    def concat(parts: Sequence[Features]) -> PairedFeatures:
        """Pool the pairs of several shadow models, in order."""
        if not all(isinstance(p, PairedFeatures) for p in parts):
            raise ValueError("every part must be PairedFeatures")
        return PairedFeatures.pair(Features.concat(parts),
                                   Features.concat([p.original for p in parts]))


def pool(parts: Sequence[Features]) -> Features:
    """The shadows' features pooled: pairs stay pairs, plain features stay plain."""
    if parts and isinstance(parts[0], PairedFeatures):
        return PairedFeatures.concat(parts)
    return Features.concat(parts)


def original_of(features: Features, attack: str) -> Features:
    """The original model's features beside ``features``; one message when absent."""
    if not isinstance(features, PairedFeatures):
        raise ValueError(f"{attack} reads the unpruned original's outputs too: it needs a "
                         "pruned victim and pruned shadows (knowledge other than 'original' "
                         "or 'pruning_unknown')")
    return features.original


def _log_true_prob(features: Features) -> np.ndarray:
    return np.log(np.maximum(features.true_prob.astype(np.float64), _TINY))


@register_attack("pair_sum")
class PairSumAttack(ThresholdAttack):
    """log p_y(original) + log p_y(pruned), one threshold per class."""

    def values(self, features: Features) -> np.ndarray:
        original = original_of(features, self.name)
        return _log_true_prob(original) + _log_true_prob(features)


@register_attack("pair_diff")
class PairDifferenceAttack(ThresholdAttack):
    """s * (log p_y(pruned) - log p_y(original)), one threshold per class; the sign s
    is the one under which the shadow members score higher (shadow AUC >= 0.5)."""

    def __init__(self, *, num_classes: int) -> None:
        super().__init__(num_classes=num_classes)
        self.direction = 1.0

    def _change(self, features: Features) -> np.ndarray:
        original = original_of(features, self.name)
        return _log_true_prob(features) - _log_true_prob(original)

    def values(self, features: Features) -> np.ndarray:
        return self.direction * self._change(features)

    def fit(self, shadow: Features, spec: AttackSpec, *,
            device: torch.device | str | None = None) -> None:
        self._check_features(shadow, "shadow")
        # Whether members gain or lose more confidence to pruning depends on how far
        # fine-tuning restores them: the shadows, pruned the same way, say which.
        self.direction = 1.0 if roc_auc(shadow.member, self._change(shadow)) >= 0.5 else -1.0
        super().fit(shadow, spec, device=device)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**super().state_dict(), "direction": np.asarray(self.direction)}

    def load_state_dict(self, state: dict[str, np.ndarray], *,
                        spec: AttackSpec | None = None) -> None:
        super().load_state_dict(state, spec=spec)
        self.direction = float(state["direction"])


@register_attack("pair_nn")
class PairMLPAttack(MLPAttack):
    """MLP on [pruned probabilities, original probabilities, one-hot label]."""

    def input_dim(self) -> int:
        return 3 * self.num_classes

    def inputs(self, features: Features) -> np.ndarray:
        original = original_of(features, self.name)
        return np.concatenate([features.prob, original.prob, features.one_hot()], axis=1)
