"""The victim/shadow split: disjoint parts, the paper's sizes, determinism in the seed."""

import dataclasses

import numpy as np
import pytest

from mia_ray.data import Split, paper_split, split_for
from mia_ray.errors import SpecError
from mia_ray.specs import DatasetSpec


def _all(split: Split) -> np.ndarray:
    return np.concatenate([split.train, split.dev, split.test])


@pytest.mark.parametrize("n", [6, 7, 50, 1797, 60000])
def test_victim_parts_disjoint_and_shadows_outside_victim_half(n):
    victim, shadows = paper_split(n, seed=3, num_shadows=4)
    v = _all(victim)
    assert len(np.unique(v)) == len(v)  # train, dev, test pairwise disjoint
    for s in shadows:
        a = _all(s)
        assert len(np.unique(a)) == len(a)
        assert not np.intersect1d(a, v).size
        # Victim and shadow halves together are the whole pool, each index once.
        assert np.array_equal(np.sort(np.concatenate([v, a])), np.arange(n))


@pytest.mark.parametrize("n, sizes", [
    (60000, (13500, 3000, 13500)),   # CIFAR-10/100, as in the paper
    (99289, (22340, 4964, 22340)),   # SVHN
    (5000, (1125, 250, 1125)),       # CHMNIST
    (1797, (404, 90, 404)),          # digits
])
def test_victim_sizes(n, sizes):
    victim, shadows = paper_split(n, seed=0, num_shadows=2)
    assert victim.sizes == sizes
    for s in shadows:
        assert s.train.size == s.test.size
        assert sum(s.sizes) == n - n // 2


def test_members_and_non_members_balanced_for_every_size():
    for n in range(6, 400):
        victim, (shadow,) = paper_split(n, seed=1, num_shadows=1)
        for s in (victim, shadow):
            assert s.train.size == s.test.size and min(s.sizes) >= 1


def test_dtype_is_int64():
    victim, (shadow,) = paper_split(100, seed=0, num_shadows=1)
    for part in (victim.train, victim.dev, victim.test, shadow.train):
        assert part.dtype == np.int64


def test_deterministic_in_seed():
    assert paper_split(1797, seed=5, num_shadows=3) == paper_split(1797, seed=5, num_shadows=3)
    a, _ = paper_split(1797, seed=5, num_shadows=3)
    b, _ = paper_split(1797, seed=6, num_shadows=3)
    assert a != b


def test_shadow_splits_differ_but_share_the_shadow_half():
    victim, shadows = paper_split(1797, seed=0, num_shadows=5)
    halves = {tuple(np.sort(_all(s))) for s in shadows}
    assert len(halves) == 1
    trains = {tuple(s.train) for s in shadows}
    assert len(trains) == 5
    # Overlapping, as the paper's shadows are redrawn from one half.
    assert np.intersect1d(shadows[0].train, shadows[1].train).size > 0


def test_more_shadows_do_not_change_the_first_ones():
    v3, s3 = paper_split(500, seed=2, num_shadows=3)
    v5, s5 = paper_split(500, seed=2, num_shadows=5)
    assert v3 == v5 and s3 == s5[:3]


def test_split_for_matches_paper_split():
    ds = DatasetSpec(name="digits", seed=4, num_shadows=3)
    victim, shadows = paper_split(1797, seed=4, num_shadows=3)
    assert split_for(ds, "victim", 0, 1797) == victim
    for i in range(3):
        assert split_for(ds, "shadow", i, 1797) == shadows[i]


@pytest.mark.parametrize("role, index", [("victim", 1), ("shadow", 3), ("shadow", -1),
                                         ("target", 0)])
def test_split_for_rejects_bad_role_or_index(role, index):
    ds = DatasetSpec(num_shadows=3)
    with pytest.raises(SpecError):
        split_for(ds, role, index, 1797)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_too_small_pool_is_refused(n):
    with pytest.raises(SpecError, match="pool size"):
        paper_split(n, seed=0, num_shadows=1)


def test_split_is_frozen():
    victim, _ = paper_split(100, seed=0, num_shadows=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        victim.train = victim.test
