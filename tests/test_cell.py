"""One cell end to end on real digits: an overfit victim leaks, an unseen one does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mia_ray.cell import main
from mia_ray.data import load_pool, split_for
from mia_ray.evaluation import run_cell
from mia_ray.features import extract_features
from mia_ray.knowledge import CellSpec
from mia_ray.metrics import DIVERGENCE_QUANTILES, roc_auc
from mia_ray.pipeline import ensure_features, load_model
from mia_ray.results import METRIC_COLUMNS, ResultTables
from mia_ray.specs import AttackSpec, DatasetSpec, TrainSpec
from mia_ray.store import ArtifactStore

ATTACKS = ("conf", "top1_conf", "mentr", "gap", "nn")


@pytest.fixture(scope="module")
def original_cell(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cell")
    cell = CellSpec(dataset=DatasetSpec(num_shadows=2), knowledge="original",
                    attacks=AttackSpec(names=ATTACKS, epochs=5),
                    train=TrainSpec(max_epochs=40, patience=40))
    store, results = ArtifactStore(str(root / "store")), ResultTables(str(root / "res"))
    trained = []
    rows = run_cell(cell, store, results, on_train=trained.append)
    return cell, store, results, rows, trained


@pytest.mark.slow
def test_overfit_victim_leaks(original_cell):
    cell, _, _, rows, trained = original_cell
    assert len(trained) == 3  # victim + 2 shadows, each once
    by_attack = {r["attack"]: r for r in rows}
    assert set(by_attack) == set(ATTACKS)
    assert by_attack["conf"]["victim_train_acc"] > 0.99
    # Trained to convergence on 404 samples: confidence separates members.
    assert by_attack["conf"]["auc"] > 0.56
    assert by_attack["mentr"]["auc"] > 0.56


@pytest.mark.slow
def test_model_that_never_saw_the_samples_does_not_leak(original_cell):
    cell, store, _, _, _ = original_cell
    shadow = load_model(cell.shadows()[0], store)  # trained on the shadow half only
    pool = load_pool(cell.dataset)
    victim_split = split_for(cell.dataset, "victim", 0, len(pool.y))
    feats = extract_features(shadow, (pool.x[victim_split.train], pool.y[victim_split.train]),
                             (pool.x[victim_split.test], pool.y[victim_split.test]),
                             draws=2, eps=1e-3, seed=0)
    p_y = feats.prob[np.arange(len(feats.label)), feats.label]
    assert 0.44 < roc_auc(feats.member, p_y) < 0.56


@pytest.mark.slow
def test_results_are_one_row_per_attack_with_no_nulls(original_cell):
    cell, _, results, _, _ = original_cell
    attacks = pd.read_parquet(results.path("attacks", cell.key()))
    assert sorted(attacks["attack"]) == sorted(ATTACKS)
    assert not attacks[METRIC_COLUMNS["attacks"]].isna().any().any()
    # The within-cell bootstrap brackets each point value; the audit is 404 + 404.
    assert (attacks["auc_ci_low"] <= attacks["auc"]).all()
    assert (attacks["auc"] <= attacks["auc_ci_high"]).all()
    # (gap scores 0/1 only, so its AUC moves least.)
    assert (attacks["auc_ci_high"] - attacks["auc_ci_low"]).between(0.01, 0.15).all()
    assert (attacks["tpr_at_1pct_fpr_ci_low"] <= attacks["tpr_at_1pct_fpr"]).all()
    assert (attacks["tpr_at_1pct_fpr"] <= attacks["tpr_at_1pct_fpr_ci_high"]).all()
    assert (attacks["n_members"] == 404).all() and (attacks["n_nonmembers"] == 404).all()
    assert (attacks["attack_epochs"] == 5).all()
    divergence = results.read("divergence")
    assert len(divergence) == 10 and divergence["n_members"].sum() == 404


@pytest.mark.slow
def test_divergence_stores_per_class_quantiles(original_cell):
    cell, store, results, _, _ = original_cell
    div = results.read("divergence").set_index("class_id")
    # The stored percentiles are those of the victim's own features, class by class,
    # members apart from non-members: recompute a few from the stored features.
    feats = ensure_features(cell.victim(), cell.attacks, store)
    p_y = feats.prob[np.arange(len(feats.label)), feats.label]
    s_y = feats.sens[np.arange(len(feats.label)), feats.label]
    for c in (0, 3, 9):
        for who, mask in (("member", feats.member), ("nonmember", ~feats.member)):
            in_class = mask & (feats.label == c)
            assert div.loc[c, f"conf_{who}_q50"] == pytest.approx(np.median(p_y[in_class]))
            assert div.loc[c, f"sens_{who}_q50"] == pytest.approx(np.median(s_y[in_class]))
    for feature in ("conf", "sens"):
        for who in ("member", "nonmember"):
            cols = [f"{feature}_{who}_q{q:02d}" for q in DIVERGENCE_QUANTILES]
            assert not div[cols].isna().any().any()  # every digit class has both kinds
    # The overfit victim is confident on its members: in most classes the member median
    # p_y is above the non-member one, and the mean gaps agree in sign on average.
    above = div["conf_member_q50"] > div["conf_nonmember_q50"]
    assert above.sum() >= 7 and div["conf_gap"].mean() > 0


@pytest.mark.slow
def test_rerun_trains_nothing(original_cell, capsys):
    cell, store, results, rows, _ = original_cell
    again = []
    rerun = run_cell(cell, store, results, on_train=again.append)
    assert again == []
    assert [r["auc"] for r in rerun] == [r["auc"] for r in rows]


@pytest.mark.parametrize("argv, needle", [
    (["--dataset", "mnist"], "dataset='mnist'"),
    (["--method", "random"], "method='random'"),
    (["--knowledge", "oracle"], "knowledge='oracle'"),
    (["--sparsity", "1.0"], "sparsity=1.0"),
    (["--dataset", "purchase100", "--data-root", "/nonexistent", "--method",
      "l1_unstructured"], "purchase100"),
    (["--defense", "dpsgd", "--strength", "0"], "strength=0.0"),
    (["--stack-models", "0"], "stack_models=0"),
    (["--stack-attacks", "0"], "stack_attacks=0"),
])
def test_bad_input_exits_2_with_one_message(argv, needle, capsys, tmp_path):
    code = main([*argv, "--store", str(tmp_path / "s"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("error:") == 1
    assert not (tmp_path / "s" / "models").exists()  # nothing started


@pytest.mark.parametrize("argv, budgets", [
    (["--dataset", "location"], (50, 25)),   # the authors' tabular budget, half to fine-tune
    (["--dataset", "digits"], (100, 50)),    # image sets: 100
    (["--dataset", "location", "--epochs", "10"], (10, 5)),
    (["--dataset", "location", "--finetune-epochs", "3"], (50, 3)),
])
def test_cell_epoch_budgets_follow_the_dataset(argv, budgets):
    from mia_ray.cell import build_cell, parse_args

    cell = build_cell(parse_args(argv))
    assert (cell.train.max_epochs, cell.finetune.max_epochs) == budgets
    assert cell.train.patience == cell.finetune.patience == 5


def test_a_dataset_given_by_path_trains_for_the_default_budget(tmp_path):
    """No reference budget exists for a user's file: 100 epochs, 50 to fine-tune."""
    from mia_ray.cell import build_cell, parse_args

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", features=rng.normal(size=(200, 6)).astype(np.float32),
             labels=rng.integers(0, 2, 200))
    cell = build_cell(parse_args(["--dataset", str(tmp_path / "mine.npz")]))
    assert (cell.train.max_epochs, cell.finetune.max_epochs) == (100, 50)
