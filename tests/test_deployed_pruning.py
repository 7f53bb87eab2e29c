"""Pruning as deployed: 2:4 semi-structured, global magnitude, and iterative magnitude
pruning with rewinding (imp), on hand-worked tensors, real training and a real store."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mia_ray import cell as cell_cli
from mia_ray.errors import SpecError
from mia_ray.grid import GridSpec
from mia_ray.imp_schedule import default_rewind_epoch, imp_schedule, round_fraction
from mia_ray.knowledge import CellSpec
from mia_ray.models import build_model
from mia_ray.pipeline import MODELS, _prepare, ensure_models, rewind_file, train_models
from mia_ray.pruning import (
    PRUNERS,
    layer_sparsities,
    make_permanent,
    measured_sparsity,
    nm_mask,
    prune_model,
)
from mia_ray.recipe import Row, target_recipe
from mia_ray.resolution import resolve_axes, resolve_dataset
from mia_ray.results import ResultTables
from mia_ray.specs import DatasetSpec, ModelSpec, PruneSpec, TrainSpec
from mia_ray.store import ArtifactStore
from mia_ray.training import fit, train

CPU = torch.device("cpu")
SHORT = TrainSpec(max_epochs=6, patience=2, batch_size=32)
FINETUNE = TrainSpec(max_epochs=2, batch_size=32)


def full_groups(weight: torch.Tensor, group: int = 4) -> torch.Tensor:
    """The complete groups of ``group`` consecutive weights of each row, (rows, n, group)."""
    rows = weight.reshape(weight.shape[0], -1)
    whole = rows.shape[1] // group * group
    return rows[:, :whole].reshape(rows.shape[0], -1, group)


def assert_two_four(model: nn.Module) -> None:
    """Every complete group of 4 along a row has at most 2 non-zero weights."""
    for module in PRUNERS["nm_2_4"]().targets(model):
        groups = full_groups(module.weight.detach())
        assert groups.numel() > 0
        assert int((groups != 0).sum(dim=2).max()) <= 2, module


# ---------------------------------------------------------------- 2:4

def test_nm_mask_keeps_the_two_largest_of_each_group_by_hand():
    weight = torch.tensor([[1.0, -5.0, 3.0, 0.5, 2.0, 2.5, -0.1, 4.0, 7.0],
                           [0.1, 0.2, 0.3, 0.4, -1.0, -1.5, 1.2, 0.0, 0.0]])
    expected = torch.tensor([[0, 1, 1, 0, 0, 1, 0, 1, 1],
                             [0, 0, 1, 1, 0, 1, 1, 0, 1]], dtype=torch.float32)
    assert torch.equal(nm_mask(weight, 2, 4), expected)
    # A conv's row is (in x kh x kw): here one group of 4 per filter.
    conv = torch.tensor([[[[0.1, -0.9], [0.5, 0.2]]], [[[3.0, 1.0], [-2.0, 0.0]]]])
    assert nm_mask(conv, 2, 4).tolist() == [[[[0, 1], [1, 0]]], [[[1, 0], [1, 0]]]]


def test_nm_2_4_removes_half_of_small_cnn_and_only_nm_sparsity_is_allowed():
    model = build_model("small_cnn", "digits", seed=0)
    prune_model(model, PruneSpec("nm_2_4", 0.5))
    assert_two_four(model)
    # small_cnn: rows of 9, 144, 288 and 512 weights; only the first conv's rows end in
    # a group of 1, which stays: 16 x 1 of its 144 weights are kept beyond half.
    assert layer_sparsities(model, "nm_2_4") == {"0": round(64 / 144, 6), "4": 0.5,
                                                 "7": 0.5, "11": 0.5}
    total = 144 + 4608 + 9216 + 5120
    assert measured_sparsity(model, "nm_2_4") == (total / 2 - 8) / total
    with pytest.raises(SpecError, match="sparsity=0.7 is not allowed: expected 0.5 for "
                                        "method 'nm_2_4'"):
        PruneSpec("nm_2_4", 0.7)
    with pytest.raises(SpecError, match="sparsity"):
        PRUNERS["nm_2_4"]().apply(build_model("fc", "digits", seed=0), 0.9)


def test_nm_2_4_pattern_survives_fine_tuning_alone_and_stacked():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 8, 8, generator=g).numpy()
    y = torch.randint(0, 10, (96,), generator=g).numpy()
    spec = TrainSpec(max_epochs=3, batch_size=16, patience=5)
    models = []
    for seed in (0, 1, 2):
        m = build_model("small_cnn", "digits", seed=seed)
        prune_model(m, PruneSpec("nm_2_4", 0.5))
        models.append(m)
    masks = [{k: v.clone() for k, v in m.state_dict().items() if k.endswith("_mask")}
             for m in models]
    before = [m.state_dict()["4.weight_orig"].clone() for m in models]
    fit(models[0], (x[:64], y[:64]), (x[64:], y[64:]), spec, seed=0, device=CPU)
    train([Row(m, (x[:64], y[:64]), (x[64:], y[64:]), seed) for m, seed in
           zip(models[1:], [1, 2])], target_recipe(spec), device=CPU)
    for m, mask, start in zip(models, masks, before):
        assert not torch.equal(m.state_dict()["4.weight_orig"], start)  # it trained
        assert all(torch.equal(m.state_dict()[k], v) for k, v in mask.items())
        make_permanent(m)
        assert_two_four(m)


def test_nm_2_4_cohort_through_the_pipeline_trains_stacked_and_keeps_the_pattern():
    data = DatasetSpec("digits", num_shadows=1)
    originals = [ModelSpec(data, "small_cnn", role=r, index=0, train=SHORT)
                 for r in ("victim", "shadow")]
    states = [m.state_dict() for m, _ in train_models(originals, [None, None], device=CPU)]
    pruned = [ModelSpec(data, "small_cnn", role=r, index=0, train=SHORT, finetune=FINETUNE,
                        prune=PruneSpec("nm_2_4", 0.5)) for r in ("victim", "shadow")]
    for model, row in train_models(pruned, states, device=CPU):
        assert row["trained_together"] == 2  # the stacked trainer, not two lone fits
        assert row["rounds"] == 1 and f"{row['measured_sparsity']:.3f}" == "0.500"
        assert_two_four(model)


def test_the_cell_command_refuses_another_sparsity_for_nm_2_4_before_any_work(
        tmp_path, capsys):
    store, results = tmp_path / "store", tmp_path / "results"
    code = cell_cli.main(["--method", "nm_2_4", "--sparsity", "0.7", "--store", str(store),
                          "--results", str(results)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "sparsity=0.7" in err and "'nm_2_4'" in err
    assert not store.exists() and not results.exists()
    assert cell_cli.main(["--method", "imp", "--imp-rounds", "0", "--store", str(store)]) == 2
    assert "imp_rounds=0 is not allowed" in capsys.readouterr().err


def test_a_grid_skips_nm_2_4_at_other_sparsities_and_refuses_it_without_0_5():
    grid = GridSpec(methods=("nm_2_4", "l1_unstructured"), sparsities=(0.5, 0.9),
                    knowledge=("full",), defenses=("none",))
    assert sorted((c.prune.method, c.prune.sparsity) for c in grid.cells()) == [
        ("l1_unstructured", 0.5), ("l1_unstructured", 0.9), ("nm_2_4", 0.5)]
    with pytest.raises(SpecError, match="sparsities=\\[0.7, 0.9\\] is not allowed: expected "
                                        "a list including 0.5"):
        GridSpec(methods=("nm_2_4",), sparsities=(0.7, 0.9))


# ---------------------------------------------------------------- global

def test_global_unstructured_uses_one_threshold_by_hand():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.2], [0.3, 4.0]]))
        model[1].weight.copy_(torch.tensor([[5.0, -6.0]]))
    prune_model(model, PruneSpec("global_unstructured", 0.5))
    # The 3 smallest |w| of all 6 are all in the first layer.
    assert model[0].weight_mask.tolist() == [[0, 0], [0, 1]]
    assert model[1].weight_mask.tolist() == [[1, 1]]
    assert layer_sparsities(model, "global_unstructured") == {"0": 0.75, "1": 0.0}
    assert measured_sparsity(model, "global_unstructured") == 0.5


# ---------------------------------------------------------------- imp: schedule and specs

def test_imp_schedule_by_hand():
    # p = 1 - 0.1 ** (1/R): 0.1 ** (1/3) = 0.4641589, 0.1 ** (2/3) = 0.2154435.
    assert round_fraction(3) == pytest.approx(0.5358411, abs=1e-7)
    assert imp_schedule(0.9, 3) == (0.535841, 0.784557, 0.9)
    assert imp_schedule(0.7, 3) == (0.535841, 0.7)
    assert imp_schedule(0.5, 3) == (0.5,)
    assert imp_schedule(0.95, 3) == (0.535841, 0.784557, 0.9, 0.95)
    assert imp_schedule(0.9, 2) == (0.683772, 0.9)  # 0.1 ** 0.5 = 0.3162278
    assert imp_schedule(0.9, 1) == (0.9,)
    assert [default_rewind_epoch(e) for e in (100, 50, 19, 1)] == [5, 2, 1, 1]


def test_imp_rounds_chain_through_parents_and_share_keys():
    data = DatasetSpec("digits", num_shadows=1)
    at = {s: ModelSpec(data, "small_cnn", prune=PruneSpec("imp", s)) for s in (0.7, 0.9)}
    r3 = at[0.9]
    r2 = r3.parent()
    r1 = r2.parent()
    assert (r3.prune.sparsity, r2.prune.sparsity, r1.prune.sparsity) == (0.9, 0.784557,
                                                                          0.535841)
    assert r1.parent() == r3.original() and r1.parent().prune is None
    assert at[0.7].parent().key() == r1.key()  # the round both cells share
    assert r3.prune.rewind_epoch == 5 and r3.prune.rounds == 3  # 100 epochs / 20
    assert ModelSpec(data, "small_cnn", prune=PruneSpec("imp", 0.9, rounds=2)).parent().key() \
        != r2.key()
    # Other methods' keys do not hold the imp fields: these are the keys before imp existed.
    assert PruneSpec("l1_unstructured", 0.7).key() == "e43bb039df2152ab"
    assert ModelSpec(DatasetSpec(), "small_cnn", prune=PruneSpec("slimming", 0.5)).key() \
        == "d3bd922d55c8f067"
    with pytest.raises(SpecError, match="rewind_epoch=7 is not allowed"):
        ModelSpec(data, "small_cnn", train=SHORT, prune=PruneSpec("imp", 0.9, rewind_epoch=7))


def test_knowledge_settings_for_the_new_methods():
    imp = CellSpec(knowledge="method_unknown", prune=PruneSpec("imp", 0.9),
                   dataset=DatasetSpec("digits", num_shadows=1))
    assert [(s.prune.method, s.prune.sparsity) for s in imp.shadows()] == [
        ("l1_unstructured", 0.9)]
    nm = CellSpec(knowledge="sparsity_unknown", prune=PruneSpec("nm_2_4", 0.5),
                  dataset=DatasetSpec("digits", num_shadows=1))
    assert nm.shadows()[0].prune == PruneSpec("nm_2_4", 0.5)  # the pattern fixes it
    full = CellSpec(knowledge="full", prune=PruneSpec("imp", 0.7, rounds=2),
                    dataset=DatasetSpec("digits", num_shadows=1))
    assert full.shadows()[0].prune == full.victim().prune


# ---------------------------------------------------------------- imp: rewinding

def _blobs(tmp_path, n=240, seed=0):
    """A user's tabular file: 3 Gaussian blobs in 8 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8)).astype(np.float32) + 2.0 * y[:, None]
    path = tmp_path / "blobs.npz"
    np.savez(path, features=x, labels=y.astype(np.int64))
    return resolve_dataset(str(path), num_shadows=1)


def test_the_rewind_checkpoint_is_the_weights_after_that_epoch_alone_and_stacked():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(80, 600, generator=g).numpy()
    y = torch.randint(0, 3, (80,), generator=g).numpy()
    long, one = TrainSpec(max_epochs=4, patience=9, batch_size=16), TrainSpec(max_epochs=1,
                                                                           batch_size=16)
    data = DatasetSpec("purchase100")

    def fresh(seed):
        return build_model("fc", data, seed=seed)

    ref = fresh(0)
    fit(ref, (x[:60], y[:60]), (x[60:], y[60:]), one, seed=3, device=CPU)
    lone = fresh(0)
    report = fit(lone, (x[:60], y[:60]), (x[60:], y[60:]), long, seed=3, device=CPU,
                 checkpoint_epochs=(1,))
    assert list(report.checkpoints) == [1]
    for k, v in ref.state_dict().items():
        assert torch.equal(report.checkpoints[1][k], v), k
    stacked = train([Row(fresh(i), (x[:60], y[:60]), (x[60:], y[60:]), 3 + i)
                     for i in range(2)], target_recipe(long), device=CPU,
                    checkpoint_epochs=(1,))
    for k, v in ref.state_dict().items():
        assert torch.allclose(stacked[0].checkpoints[1][k], v, atol=1e-5), k


def test_imp_reuses_shared_rounds_and_rewinds_to_the_original_checkpoint(tmp_path):
    data = _blobs(tmp_path)
    store = ArtifactStore(str(tmp_path / "store"))
    results = ResultTables(str(tmp_path / "results"))

    def specs(sparsity):
        return [ModelSpec(data, "fc", role=r, index=0, train=SHORT, finetune=FINETUNE,
                          prune=PruneSpec("imp", sparsity)) for r in ("victim", "shadow")]

    trained: list[ModelSpec] = []
    ensure_models(specs(0.7), store, results, device=CPU, on_train=trained.append)
    assert sorted((s.role, s.prune.sparsity if s.prune else 0.0) for s in trained) == [
        ("shadow", 0.0), ("shadow", 0.535841), ("shadow", 0.7),
        ("victim", 0.0), ("victim", 0.535841), ("victim", 0.7)]
    trained.clear()
    ensure_models(specs(0.9), store, results, device=CPU, on_train=trained.append)
    # Round 1 (0.535841) is the 0.7 cell's: only rounds 2 and 3 of 0.9 train.
    assert sorted((s.role, s.prune.sparsity) for s in trained) == [
        ("shadow", 0.784557), ("shadow", 0.9), ("victim", 0.784557), ("victim", 0.9)]

    models = results.read("models")
    victim = models[models.role == "victim"].set_index("sparsity")
    assert len(models) == 10 and models.model_key.is_unique
    assert victim.loc[[0.0, 0.535841, 0.7, 0.784557, 0.9], "rounds"].tolist() == [0, 1, 2, 2, 3]
    assert victim.loc[0.9, "parent_key"] == victim.loc[0.784557, "model_key"]
    assert victim.loc[0.784557, "parent_key"] == victim.loc[0.535841, "model_key"]
    assert victim.loc[0.7, "parent_key"] == victim.loc[0.535841, "model_key"]
    for s in (0.535841, 0.7, 0.9):  # fc: 8x256 + 256x128 + 128x3 weights
        assert victim.loc[s, "measured_sparsity"] == pytest.approx(s, abs=1e-3)
        assert json.loads(victim.loc[s, "layer_sparsity"]).keys() == {"1", "4", "7"}
    assert pd.isna(victim.loc[0.0, "layer_sparsity"])

    # Round 3's zeros include round 2's (each round prunes the survivors).
    v3, v2 = specs(0.9)[0], specs(0.9)[0].parent()
    w3, w2 = store.state_dict(MODELS, v3.key()), store.state_dict(MODELS, v2.key())
    for name in ("1.weight", "4.weight", "7.weight"):
        assert torch.all(w3[name][w2[name] == 0] == 0)

    # Before fine-tuning a round holds the original's weights at the rewind epoch
    # (1 = 6 epochs / 20, at least 1) under the mask taken from the previous round.
    original = v3.original()
    rewind = store.state_dict(MODELS, original.key(), name=rewind_file(1))
    assert store.meta(MODELS, original.key())["rewind_epochs"] == [1]
    final = store.state_dict(MODELS, original.key())
    assert not torch.equal(rewind["1.weight"], final["1.weight"])
    round1 = store.state_dict(MODELS, v2.parent().key())
    layer = _prepare(v2, round1, rewind).model[1]
    assert torch.equal(layer.weight_orig, rewind["1.weight"])
    previous = round1["1.weight"]
    kept = layer.weight_mask.bool()
    assert abs(int((~kept).sum()) - 0.784557 * previous.numel()) < 1
    # The mask drops the smallest magnitudes of the previous round's weights.
    assert previous[kept].abs().min() >= previous[~kept].abs().max()


def test_an_original_without_its_rewind_checkpoint_is_an_explicit_error(tmp_path):
    data = _blobs(tmp_path)
    store = ArtifactStore(str(tmp_path / "store"))
    original = ModelSpec(data, "fc", train=SHORT)
    ensure_models([original], store, device=CPU)
    meta = store.meta(MODELS, original.key())
    del meta["rewind_epochs"]  # a store entry written before imp existed
    store.put_meta(MODELS, original.key(), meta)
    imp = ModelSpec(data, "fc", train=SHORT, finetune=FINETUNE, prune=PruneSpec("imp", 0.5))
    with pytest.raises(SpecError, match="trained before imp existed"):
        ensure_models([imp], store, device=CPU)
    assert not store.has(MODELS, imp.key())


# ---------------------------------------------------------------- the engine

@pytest.mark.slow
def test_a_sweep_on_a_users_file_builds_every_round_once(ray_session, tmp_path):
    """imp at three sparsities and 2:4 on a user's file through the engine: every imp
    round is built once although two sparsities share round 1, the originals keep the
    rewind epoch the grid asks for, and every cell has its rows. Already the smallest
    grid with a shared round (one shadow, short budgets, threshold attacks)."""
    from sweep_driver import tiny_grid

    from mia_ray.engine import run_sweep
    from mia_ray.planner import plan
    from mia_ray.specs import AttackSpec

    data = _blobs(tmp_path)
    grid = tiny_grid(datasets=(data.path,), **resolve_axes((data.path,), ("fc",)),
                     methods=("imp", "nm_2_4"),
                     sparsities=(0.5, 0.7, 0.9), knowledge=("full",), defenses=("none",),
                     strengths=(0.0,), num_shadows=1, train=SHORT, finetune=FINETUNE,
                     attacks=AttackSpec(names=("conf", "gap"), epochs=1),
                     rewind_epoch=2,  # not the default (6 epochs / 20 -> 1)
                     num_trainers=2)  # two at once still race for the shared round 1
    the_plan = plan(grid)
    assert len(the_plan.cells) == 4  # imp at 3 sparsities, 2:4 at 0.5 only
    outcome = run_sweep(grid, str(tmp_path / "sweep"), progress=False)
    assert outcome.errors == []
    # originals, 2:4, and imp's rounds 0.5, 0.535841, 0.7, 0.784557, 0.9: 7 models per
    # role, each trained once although 0.7 and 0.9 share round 1.
    assert sorted(outcome.trained("model")) == sorted(s.key() for s in the_plan.models)
    models = pd.read_parquet(tmp_path / "sweep" / "models")
    assert len(models) == 14 and models.model_key.is_unique
    imp = models[(models.method == "imp") & (models.role == "victim")]
    assert sorted(zip(imp.sparsity, imp.rounds)) == [
        (0.5, 1), (0.535841, 1), (0.7, 2), (0.784557, 2), (0.9, 3)]
    nm = models[models.method == "nm_2_4"]
    assert nm.measured_sparsity.tolist() == [0.5, 0.5]  # fc: rows of 8, 256 and 128
    # The trainers told the originals, built first, to keep epoch 2 as well.
    store = ArtifactStore(str(tmp_path / "sweep" / "artifacts"))
    originals = models[models.method == "none"].model_key
    assert [store.meta(MODELS, k)["rewind_epochs"] for k in originals] == [[1, 2], [1, 2]]
    attacks = pd.read_parquet(tmp_path / "sweep" / "attacks")
    assert set(attacks.method) == {"imp", "nm_2_4"}
    assert len(attacks) == 8 and not attacks.accuracy.isna().any()


# ---------------------------------------------------------------- the report

def test_the_report_takes_the_new_methods_and_expects_2_4_at_0_5_only(tmp_path):
    from analysis.report import generate_report
    from tests.fixtures_results import write_synthetic_results

    methods = ("l1_unstructured", "nm_2_4", "global_unstructured", "imp")
    root = write_synthetic_results(
        tmp_path, seeds=(0, 1), methods=methods, sparsities=(0.5, 0.9),
        knowledge=("original", "full"), strengths=(0.0,), tables=("attacks", "models"),
        # A sweep writes no 2:4 cell at 0.9: the report must not call it missing.
        drop=lambda c: c["method"] == "nm_2_4" and c["sparsity"] != 0.5)
    md = generate_report(root).read_text()
    assert "No cell of the 16 expected is missing" in md  # 2 seeds x (1 + 7 pruned)
    curves = pd.concat(pd.read_csv(p) for p in (root / "figures").glob("*sparsity*.csv"))
    assert set(methods) <= set(curves.astype(str).stack())


def test_an_audited_model_rewinds_to_its_imported_weights(tmp_path):
    from mia_ray.audit.inputs import import_victim
    from mia_ray.pipeline import _rewind_state

    data = _blobs(tmp_path)
    victim = ModelSpec(data, "fc", train=SHORT)
    model = build_model("fc", data, seed=7)
    import_victim(victim, model, ArtifactStore(str(tmp_path / "store")), None)
    store = ArtifactStore(str(tmp_path / "store"))
    imp = ModelSpec(data, "fc", train=SHORT, finetune=FINETUNE, prune=PruneSpec("imp", 0.5))
    # No training history: its rewind point is the imported weights themselves.
    rewind = _rewind_state(imp, store)
    assert all(torch.equal(rewind[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("args, field", [
    (["--methods", "nm_2_4", "--sparsities", "0.7,0.9"], "sparsities=[0.7, 0.9]"),
    (["--methods", "imp", "--imp-rounds", "0"], "imp_rounds=0"),
    (["--methods", "imp", "--rewind-epoch", "0"], "rewind_epoch=0"),
])
def test_bad_new_method_options_stop_a_sweep_before_ray(args, field, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    import mia_ray.engine.sweep as sweep

    def no_ray(**_):
        raise AssertionError("Ray was started for a bad grid")

    monkeypatch.setattr(sweep, "connect", no_ray)
    path = Path(__file__).resolve().parents[1] / "sweeps" / "small_grid.py"
    spec = importlib.util.spec_from_file_location("sweeps_small_grid_h22", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(args) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("error:") == 1
