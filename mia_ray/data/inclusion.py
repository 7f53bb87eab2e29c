"""Which samples each reference model of an online attack trains on.

The reference population is the cell's audited samples (the victim's members and as
many non-members, its train and test splits) plus the shadow pool (every sample a
shadow model may train on), less the victim's dev split, which every reference uses
for early stopping and so must never train on. Reference ``i`` trains on a random
half of that population:

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

from mia_ray.specs import DatasetSpec

# Mixed into each pair's seed so the draw shares no stream with a shadow's split.
_STREAM = 0x5EF


def reference_population(dataset: DatasetSpec, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(population, dev): sorted pool indices the references draw their halves from,
    and the victim's dev split, which they early-stop on."""
    from mia_ray.data.splits import split_for  # lazy: splits.split_for calls this module

    victim = split_for(dataset, "victim", 0, n)
    shadow = split_for(dataset, "shadow", 0, n)
    pool = np.concatenate([victim.train, victim.test, shadow.train, shadow.dev, shadow.test])
    return np.setdiff1d(pool, victim.dev), victim.dev


def pair_halves(dataset: DatasetSpec, pair: int, population: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The two sorted halves of ``population`` that references 2 * pair and
    2 * pair + 1 train on (with an odd population the second is one sample larger)."""
    order = np.random.default_rng([dataset.seed, pair, _STREAM]).permutation(population)
    half = len(order) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def reference_members(dataset: DatasetSpec, index: int, population: np.ndarray) -> np.ndarray:
    """Sorted pool indices reference ``index`` trains on."""
    return pair_halves(dataset, index // 2, population)[index % 2]


def inclusion(dataset: DatasetSpec, count: int, n: int, samples: np.ndarray) -> np.ndarray:
    """(count, len(samples)) bool: True where reference i trained on ``samples[j]``."""
    population, _ = reference_population(dataset, n)
    return np.stack([np.isin(samples, reference_members(dataset, i, population))
                     for i in range(count)])
