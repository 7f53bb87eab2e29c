"""Each dataset seed's attack fits draw their own randomness, so seeds are replicates.

A fit's learned attacks take their initialisation, dropout masks and shuffle from a
seed derived from the fit's key (``pipeline.attack_seed``), not from the attack
settings alone, which every dataset seed shares.
"""

from __future__ import annotations

import numpy as np
import pytest

from mia_ray.features import Features
from mia_ray.knowledge import CellSpec
from mia_ray.pipeline import (
    ATTACK_FITS,
    FEATURES,
    attack_seed,
    ensure_attack_fits,
    features_key,
)
from mia_ray.specs import AttackSpec, DatasetSpec
from mia_ray.store import ArtifactStore

CLASSES = 10  # digits
# One epoch at a vanishing learning rate: every weight ends within ~1e-9 of where the
# network was initialised, so a stored fit shows its initial weights.
NEAR_INIT = AttackSpec(names=("conf", "nn", "nn_cls", "samia"), epochs=1, lr=1e-12,
                       batch_size=64)


def _shadow_features(n: int, seed: int) -> Features:
    rng = np.random.default_rng(seed)
    prob = rng.dirichlet(np.ones(CLASSES), n).astype(np.float32)
    sens = rng.random((n, CLASSES)).astype(np.float32)
    return Features(prob, sens, rng.integers(0, CLASSES, n), rng.random(n) < 0.5)


def _fit_for(dataset_seed: int, store: ArtifactStore):
    """The attack fit of a digits cell at ``dataset_seed``, its shadows' features stored."""
    cell = CellSpec(dataset=DatasetSpec(seed=dataset_seed, num_shadows=2), attacks=NEAR_INIT)
    fit = cell.attack_fit()
    for i, shadow in enumerate(fit.shadows):
        key = features_key(shadow, fit.attacks)
        store.put_arrays(FEATURES, key, _shadow_features(150, 10 * dataset_seed + i).to_arrays())
        store.put_meta(FEATURES, key, {"model_key": shadow.key(), "n": 150})
    return fit


def _first_layer(attacks, name: str) -> np.ndarray:
    state = attacks[name].state_dict()
    return next(v for k, v in state.items() if k.endswith("weight") and v.ndim == 2)


@pytest.mark.parametrize("stack", [True, False])
def test_two_dataset_seeds_start_their_attacks_from_different_weights(tmp_path, stack):
    store = ArtifactStore(str(tmp_path))
    fits = [_fit_for(0, store), _fit_for(1, store)]
    assert attack_seed(fits[0]) != attack_seed(fits[1])
    first, second = ensure_attack_fits(fits, store, stack=stack)
    for name in ("nn", "nn_cls", "samia"):
        a, b = _first_layer(first, name), _first_layer(second, name)
        # Xavier-normal weights of a 512-wide layer have a standard deviation near 0.06:
        # two independent draws differ by that much; one seed's draw twice, by ~1e-9.
        assert np.abs(a - b).max() > 0.05, name
    for fit in fits:
        assert store.meta(ATTACK_FITS, fit.key())["seed"] == attack_seed(fit)


def test_a_fit_refitted_from_its_key_ends_at_the_same_weights(tmp_path):
    """The seed is a function of the key: a rerun (another store) repeats the fit exactly,
    and the stacked job gives each fit what its lone fit gives it."""
    fitted = []
    for folder, stack in (("a", True), ("b", False)):
        store = ArtifactStore(str(tmp_path / folder))
        fits = [_fit_for(0, store), _fit_for(1, store)]
        fitted.append(ensure_attack_fits(fits, store, stack=stack))
    for one, other in zip(*fitted):
        for name in ("nn", "nn_cls", "samia"):
            np.testing.assert_allclose(_first_layer(one, name), _first_layer(other, name),
                                       atol=1e-6, rtol=0, err_msg=name)
