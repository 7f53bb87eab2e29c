"""The paper's victim/shadow split of a dataset pool.

The pool (official train + test merged) is shuffled once with the dataset seed and
cut in two disjoint halves. The victim half is split once; the shadow half is
re-split for every shadow model, so shadow splits overlap each other but never
touch a victim index. An audit cuts its splits from the member indices its dataset
spec carries (:func:`audit_split`), and an online attack's reference models draw
their halves of a reference population (:func:`reference_population`,
:func:`pair_halves`). Everything is a pure function of the spec and (n, role, index):
no file is read here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mia_ray.catalog import ROLES
from mia_ray.errors import SpecError
from mia_ray.specs import DatasetSpec

# The smallest pool whose halves can each give train, dev and test one sample.
MIN_POOL = 6


# eq=False: the generated __eq__ would compare arrays and fail on truth value.
@dataclass(frozen=True, eq=False)
class Split:
    """Indices into the pool. ``train`` are members, ``test`` the same number of non-members."""

    train: np.ndarray
    dev: np.ndarray
    test: np.ndarray

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return all(np.array_equal(a, b) for a, b in
                   ((self.train, other.train), (self.dev, other.dev), (self.test, other.test)))

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.dev), len(self.test)


def _part_sizes(h: int) -> tuple[int, int, int]:
    """(train, dev, test) for a half of h samples: 45% test, as many members, dev the rest."""
    # Integer half-up rounding of 0.45*h: float rounding is off by one at some h
    # and Python's round() rounds halves to even.
    test = (45 * h + 50) // 100
    # Only tiny halves need this clamp (it never binds for h > 10): it keeps dev
    # non-empty instead of failing at some small sizes and not at others.
    test = min(test, (h - 1) // 2)
    return test, h - 2 * test, test


def _cut(order: np.ndarray) -> Split:
    """Cut an already shuffled half into train, dev and test."""
    n_train, n_dev, _ = _part_sizes(len(order))
    train = order[:n_train]
    dev = order[n_train:n_train + n_dev]
    test = order[n_train + n_dev:]
    # Sorted so a split compares and prints as a set; training shuffles its own batches.
    return Split(train=np.sort(train), dev=np.sort(dev), test=np.sort(test))


def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(n, (int, np.integer)) or n < MIN_POOL:
        raise SpecError("pool size", n, f"an integer >= {MIN_POOL} (train, dev and test of "
                        "both the victim and the shadow half need a sample each)")
    perm = np.random.default_rng(seed).permutation(int(n)).astype(np.int64)
    return perm[: n // 2], perm[n // 2:]


def _shadow(shadow_half: np.ndarray, seed: int, index: int) -> Split:
    return _cut(np.random.default_rng(seed + index).permutation(shadow_half))


def paper_split(n: int, *, seed: int, num_shadows: int) -> tuple[Split, tuple[Split, ...]]:
    """(victim split, K shadow splits) of a pool of n samples."""
    if not isinstance(num_shadows, int) or num_shadows < 1:
        raise SpecError("num_shadows", num_shadows, "an integer >= 1")
    victim_half, shadow_half = _halves(n, seed)
    shadows = tuple(_shadow(shadow_half, seed, i) for i in range(num_shadows))
    return _cut(victim_half), shadows


def split_for(dataset: DatasetSpec, role: str, index: int, n: int) -> Split:
    """The split of one model: role 'victim' (index 0), 'shadow' (index in [0, K)) or
    'reference' (a random half of the reference population, :func:`reference_members`)."""
    if role not in ROLES:
        raise SpecError("role", role, ROLES)
    if role == "reference":  # an online attack's reference model (pair_halves)
        population, dev = reference_population(dataset, n)
        train = reference_members(dataset, index, population)
        return Split(train=train, dev=dev, test=np.setdiff1d(population, train))
    if dataset.members:  # an audit: the user's member set decides (audit_split)
        if dataset.member_indices is None:
            raise SpecError("members", dataset.members_path or dataset.members,
                            "member indices read when the audit was resolved "
                            "(mia_ray.resolution.resolve_members)")
        return audit_split(dataset.member_indices, n, dataset.seed, role, index)
    victim_half, shadow_half = _halves(n, dataset.seed)
    if role == "victim":
        if index != 0:
            raise SpecError("index", index, "0 for the victim")
        return _cut(victim_half)
    if not isinstance(index, int) or not 0 <= index < dataset.num_shadows:
        raise SpecError("index", index, f"an integer in [0, {dataset.num_shadows - 1}]")
    return _shadow(shadow_half, dataset.seed, index)


def audit_split(members: np.ndarray, n: int, seed: int, role: str, index: int) -> Split:
    """The Split of the audited model (role 'victim') or of shadow ``index``.

    The non-members (every sample not in ``members``) are shuffled once with ``seed``:

    - the audited model's **test** split (the non-members it is attacked against) is the
      first ``min(members, non-members // 2)`` of them; no shadow ever trains on these,
      so LiRA and RMIA's shadows stay OUT models for every audited sample;
    - its **dev** split (early stopping while a pruned variant is fine-tuned) is a tenth
      of the remaining non-members;
    - shadow i permutes the remaining non-members with ``seed + 1 + i``: the first half
      are its members (train), a fifth of the rest its dev split, the others its test
      split. Shadows never see an audited member.
    """
    others = np.setdiff1d(np.arange(n, dtype=np.int64), members)
    others = np.random.default_rng(seed).permutation(others)
    n_test = min(len(members), len(others) // 2)
    audited, rest = others[:n_test], others[n_test:]
    if role == "victim":
        n_dev = max(1, len(rest) // 10)
        return Split(train=np.sort(members), dev=np.sort(rest[:n_dev]), test=np.sort(audited))
    order = np.random.default_rng(seed + 1 + index).permutation(rest)
    half = len(order) // 2
    n_dev = max(1, (len(order) - half) // 5)
    return Split(train=np.sort(order[:half]), dev=np.sort(order[half:half + n_dev]),
                 test=np.sort(order[half + n_dev:]))


# --- an online attack's reference models ----------------------------------------
# Which samples each reference model of an online attack trains on.
#
# The reference population is the cell's audited samples (the victim's members and as
# many non-members, its train and test splits; an audit short of non-members pads it
# with a fixed draw from the shadow pool). The victim's dev split, which every
# reference uses for early stopping, is never in it. Reference ``i`` trains on a
# random half of that population, so it trains on exactly as many samples as the
# victim, as the target and references of Carlini et al. are halves of one population:
#
# - references ``2j`` and ``2j + 1`` are a pair: one permutation of the population,
#   drawn from a generator seeded with (dataset seed, j), gives ``2j`` its first half and
#   ``2j + 1`` the rest. Every sample is IN for exactly one reference of each pair, so
#   with any even N every sample is IN for exactly N / 2 references (the balanced
#   inclusion of the LiRA reference code, there drawn as one N-column matrix);
# - a pair's draw depends on j alone, never on N: reference i trains on the same half
#   whatever N is, so growing N from 16 to 64 adds 48 models and changes none.
#
# A reference's test split is the half it did not train on (its ``test_acc`` in the
# ``models`` table is on samples it never saw); its dev split is the victim's.

# Mixed into each reference pair's seed so the draw shares no stream with a shadow's split.
_REFERENCE_STREAM = 0x5EF


def reference_population(dataset: DatasetSpec, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(population, dev): sorted pool indices the references draw their halves from, and
    the victim's dev split, which they early-stop on.

    The population is the audited samples (the victim's train and test splits), so a
    half of it is exactly the victim's training-set size, as Carlini et al.'s target
    and references are halves of one population. Where an audit has fewer audited
    non-members than members, shadow-pool samples (a fixed draw, never the victim's
    dev split) pad it to twice the members. The shadow pool otherwise stays out of it:
    it is RMIA's population z, which the victim never saw.
    """
    victim = split_for(dataset, "victim", 0, n)
    audited = np.concatenate([victim.train, victim.test])
    need = 2 * len(victim.train) - len(audited)
    if need > 0:
        shadow = split_for(dataset, "shadow", 0, n)
        pool = np.setdiff1d(np.concatenate([shadow.train, shadow.dev, shadow.test]),
                            np.concatenate([audited, victim.dev]))
        rng = np.random.default_rng([dataset.seed, _REFERENCE_STREAM])
        audited = np.concatenate([audited, rng.permutation(pool)[:need]])
    return np.sort(audited), victim.dev


def pair_halves(dataset: DatasetSpec, pair: int, population: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The two sorted halves of ``population`` that references 2 * pair and
    2 * pair + 1 train on (with an odd population the second is one sample larger):
    complements, so every sample is IN for exactly half of any even number of
    references, and reference i's half never depends on how many there are."""
    order = np.random.default_rng([dataset.seed, pair, _REFERENCE_STREAM]).permutation(population)
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
