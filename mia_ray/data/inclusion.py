"""Which samples each reference model of an online attack trains on.

The reference population is the cell's audited samples (the victim's members and as
many non-members, its train and test splits; an audit short of non-members pads it
with a fixed draw from the shadow pool). The victim's dev split, which every
reference uses for early stopping, is never in it. Reference ``i`` trains on a
random half of that population, so it trains on exactly as many samples as the
victim, as the target and references of Carlini et al. are halves of one population:

- references ``2j`` and ``2j + 1`` are a pair: one permutation of the population,
  drawn from a generator seeded with (dataset seed, j), gives ``2j`` its first half and
  ``2j + 1`` the rest. Every sample is IN for exactly one reference of each pair, so
  with any even N every sample is IN for exactly N / 2 references (the balanced
  inclusion of the LiRA reference code, there drawn as one N-column matrix);
- a pair's draw depends on j alone, never on N: reference i trains on the same half
  whatever N is, so growing N from 16 to 64 adds 48 models and changes none.

A reference's test split is the half it did not train on (its ``test_acc`` in the
``models`` table is on samples it never saw); its dev split is the victim's.
"""

from __future__ import annotations

import numpy as np

from mia_ray.data.splits import pair_halves, reference_members, reference_population
from mia_ray.specs import DatasetSpec

__all__ = ["inclusion", "pair_halves", "reference_members", "reference_population"]


def inclusion(dataset: DatasetSpec, count: int, n: int, samples: np.ndarray) -> np.ndarray:
    """(count, len(samples)) bool: True where reference i trained on ``samples[j]``."""
    population, _ = reference_population(dataset, n)
    return np.stack([np.isin(samples, reference_members(dataset, i, population))
                     for i in range(count)])
