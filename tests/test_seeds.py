"""Seeds as an axis: the small grid's defaults, and a finished sweep growing by a seed."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from mia_ray.planner import plan

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"sweeps_{name}", ROOT / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_grid_dry_run_prints_seeds_and_attack_epochs(capsys):
    assert load_script("small_grid").main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "seeds:                0, 1, 2, 3, 4 (5)" in out
    assert "attack epochs:        100 for every learned attack" in out
    assert load_script("small_grid").main(["--dry-run", "--seeds", "3,4", "--attack-epochs",
                                           "20"]) == 0
    out = capsys.readouterr().out
    assert "seeds:                3, 4 (2)" in out and "attack epochs:        20" in out


def test_small_grid_can_test_every_claim_on_five_seeds():
    grid = load_script("small_grid").small_grid()
    assert len(grid.seeds) >= 5 and grid.attacks.epochs == 100
    cells = pd.DataFrame([c.coordinates() for c in grid.cells()])
    for seed in grid.seeds:
        c = cells[cells.seed == seed]
        assert (c.knowledge == "original").sum() == 1                      # claim 1's reference
        full = c[(c.knowledge == "full") & (c.strength == 0)]
        assert full.sparsity.nunique() >= 2                    # claims 1 (and its slope), 2, 3
        assert ((c.defense == "ppb") & (c.strength > 0)
                & (c.knowledge == "defense_unknown")).any()                # claim 4, paper's
    assert {"samia", "conf", "nn", "nn_cls", "gap"} <= set(grid.attacks.names)  # claim 3
    # The built-in set with signal, at the authors' tabular budget (50 epochs, 25).
    assert grid.datasets == ("mnist1d",) and set(cells.arch) == {"fc"}
    assert {(c.train.max_epochs, c.finetune.max_epochs) for c in grid.cells()} == {(50, 25)}


@pytest.mark.slow
def test_adding_a_seed_trains_only_that_seeds_models_and_attack_fits(finished_tiny_sweep,
                                                                     tmp_path):
    """Seeds 0 -> 0, 1 on a finished sweep (a copy of the session's
    ``finished_tiny_sweep``): exactly seed 1's builds and attack fits train, and seed
    0's rows are the first run's, untouched. A driver that redid found cells, or keys
    blind to the seed, fails."""
    from conftest import grown_from

    from mia_ray.engine import run_sweep

    one, storage, first = grown_from(finished_tiny_sweep, tmp_path)
    two = dataclasses.replace(one, seeds=(0, 1))
    assert one.seeds == (0,)
    assert first.errors == [] and len(first.trained("model")) == len(plan(one).models)
    before = pd.read_parquet(storage / "attacks")

    second = run_sweep(two, str(storage), progress=False)
    assert second.errors == []
    models = pd.read_parquet(storage / "models").set_index("model_key")
    trained = second.trained("model")
    # Exactly the new seed's builds, each once; none of seed 0's.
    assert sorted(trained) == sorted(models.index[models.seed == 1])
    assert len(trained) == len(plan(two).models) - len(plan(one).models) > 0
    new_fits = {f.key() for f in plan(two).attack_fits} - {f.key() for f in plan(one).attack_fits}
    assert sorted(second.trained("attack_fit")) == sorted(new_fits) and new_fits
    # Seed 0's cells were found done: their rows are the first run's, untouched.
    after = pd.read_parquet(storage / "attacks")
    assert sorted(after.seed.unique()) == [0, 1]
    kept = after[after.seed == 0].set_index(["cell_key", "attack"]).sort_index()
    pd.testing.assert_frame_equal(kept, before.set_index(["cell_key", "attack"]).sort_index())
