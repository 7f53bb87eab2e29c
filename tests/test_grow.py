"""Keys that let a sweep grow: more shadows, seeds, sparsities, strengths or knowledge
settings train only what is new."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter

import pandas as pd
import pytest
from sweep_driver import tiny_grid

from mia_ray.keys import KEY_VERSION, canonical_json
from mia_ray.knowledge import CellSpec
from mia_ray.planner import plan
from mia_ray.specs import DatasetSpec


def test_victim_and_shadow_keys_do_not_depend_on_k():
    small = CellSpec(dataset=DatasetSpec(num_shadows=2))
    large = CellSpec(dataset=DatasetSpec(num_shadows=5))
    assert small.victim().key() == large.victim().key()
    assert [s.key() for s in small.shadows()] == [s.key() for s in large.shadows()[:2]]
    assert len({s.key() for s in large.shadows()}) == 5
    # The cell and its attack fit do depend on K: their results differ.
    assert small.key() != large.key()
    assert small.attack_fit().key() != large.attack_fit().key()
    # Every other dataset field still separates models.
    other_seed = CellSpec(dataset=DatasetSpec(num_shadows=2, seed=1))
    assert other_seed.victim().key() != small.victim().key()


def test_an_attack_fit_is_keyed_by_the_list_of_its_members_keys():
    fit = CellSpec(dataset=DatasetSpec(num_shadows=3)).attack_fit()
    expected = canonical_json({"type": "AttackFitSpec", "v": KEY_VERSION, "seeded": "by-key",
                               "shadows": [s.key() for s in fit.shadows],
                               "attacks": fit.attacks.key()})
    assert fit.key() == hashlib.sha256(expected.encode()).hexdigest()[:16]
    assert KEY_VERSION == 2  # older stores (version 1 keys) are not reused


def _stage(spec) -> tuple:
    return (spec.prune, spec.defense, spec.role == "victim")


@pytest.mark.parametrize("change", [
    {"num_shadows": 4}, {"seeds": (0, 1)}, {"sparsities": (0.5, 0.7)},
    {"strengths": (0.0, 4.0, 16.0)}, {"knowledge": ("original", "full", "defense_unknown",
                                                    "sparsity_unknown")},
])
def test_a_grown_grid_plans_every_old_build_again_under_the_same_key(change):
    old = tiny_grid(methods=("l1_unstructured",))
    new = dataclasses.replace(old, **change)
    old_plan, new_plan = plan(old), plan(new)
    old_models = {s.key() for s in old_plan.models}
    new_models = {s.key(): s for s in new_plan.models}
    assert old_models <= set(new_models)  # (an added knowledge may need no new model)
    if "num_shadows" in change:
        added = [s for k, s in new_models.items() if k not in old_models]
        assert all(s.role == "shadow" and s.index in (2, 3) for s in added)
        per_cohort = Counter((s.prune, s.defense) for s in added)
        assert set(per_cohort.values()) == {2}  # two new shadows per pruning group
    else:
        old_fits = {f.key() for f in old_plan.attack_fits}
        assert old_fits <= {f.key() for f in new_plan.attack_fits}
        assert {c.key() for c in old_plan.cells} < {c.key() for c in new_plan.cells}


@pytest.mark.slow
def test_growing_a_finished_sweep_from_2_to_4_shadows_trains_only_the_new_ones(
        finished_tiny_sweep, tmp_path):
    """K 2 -> 4 on a finished sweep (a copy of the session's ``finished_tiny_sweep``):
    only shadows 2 and 3 of each cohort train, every old build is found in the store,
    and the cells at K=4 are new rows beside the K=2 ones. A key that depended on K
    would retrain everything; one that did not separate K would add no rows."""
    from conftest import grown_from

    from mia_ray.engine import run_sweep

    grid, storage, first = grown_from(finished_tiny_sweep, tmp_path)
    assert first.errors == []
    grown = dataclasses.replace(grid, num_shadows=4)
    second = run_sweep(grown, str(storage), progress=False)
    assert second.errors == []

    before = {s.key(): s for s in plan(grid).models}
    trained = [s for s in plan(grown).models if s.key() in set(second.trained("model"))]
    assert len(second.trained("model")) == len(trained)  # every build once, all planned
    assert not {s.key() for s in trained} & set(before)  # nothing retrained
    assert all(s.role == "shadow" and s.index in (2, 3) for s in trained)
    cohorts_ = Counter((s.prune, s.defense) for s in plan(grown).models if s.role == "victim")
    per_cohort = Counter((s.prune, s.defense) for s in trained)
    # Originals, pruned undefended, pruned with PPB 4: two new shadows in each.
    assert len(cohorts_) == 3 and per_cohort == {c: 2 for c in cohorts_}

    models = pd.read_parquet(storage / "models")
    assert models["model_key"].is_unique and len(models) == len(plan(grown).models)
    attacks = pd.read_parquet(storage / "attacks")
    assert sorted(set(attacks["num_shadows"])) == [2, 4]
    assert not attacks.duplicated(["cell_key", "attack"]).any()
    assert len(attacks) == 2 * len(plan(grown).cells) * 2  # both sweeps' cells, 2 attacks
