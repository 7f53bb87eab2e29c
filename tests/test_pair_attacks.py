"""Pair attacks: the pruned victim and its unpruned original, queried together."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mia_ray.attacks import fit_attacks, make_attack
from mia_ray.attacks.pair import PairedFeatures, pool
from mia_ray.cell import main as cell_main
from mia_ray.errors import SpecError
from mia_ray.features import Features
from mia_ray.knowledge import CellSpec
from mia_ray.resolution import resolve_dataset
from mia_ray.specs import AttackSpec, DatasetSpec, PruneSpec, TrainSpec


def _features(prob, label, member):
    prob = np.asarray(prob, dtype=np.float32)
    return Features(prob=prob, sens=np.zeros_like(prob), label=label, member=member)


def _pair(p_pruned, p_original, label, member):
    return PairedFeatures.pair(_features(p_pruned, label, member),
                               _features(p_original, label, member))


LABEL = np.array([0, 1, 0, 1])
MEMBER = np.array([True, True, False, False])
PRUNED = [[0.8, 0.2], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]]
ORIGINAL = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.6, 0.4]]


def test_pair_sum_and_diff_values_are_the_log_confidences_hand_worked():
    feats = _pair(PRUNED, ORIGINAL, LABEL, MEMBER)
    pair_sum = make_attack("pair_sum", num_classes=2)
    np.testing.assert_allclose(pair_sum.values(feats), [
        math.log(0.9) + math.log(0.8), math.log(0.6) + math.log(0.7),
        math.log(0.6) + math.log(0.5), math.log(0.4) + math.log(0.1)], rtol=1e-6)
    pair_diff = make_attack("pair_diff", num_classes=2)
    np.testing.assert_allclose(pair_diff.values(feats), [
        math.log(0.8 / 0.9), math.log(0.7 / 0.6), math.log(0.5 / 0.6), math.log(0.1 / 0.4)],
        rtol=1e-6)


def test_pair_diff_takes_its_sign_from_the_shadows():
    rng = np.random.default_rng(0)
    n = 400
    member = np.arange(n) < n // 2
    label = rng.integers(0, 2, n)
    original = np.full(n, 0.9)
    # Shadow members LOSE more confidence to pruning than non-members do.
    pruned = np.where(member, 0.5, 0.8) + rng.uniform(-0.05, 0.05, n)

    def probs(p_true):
        p = np.empty((n, 2))
        p[np.arange(n), label] = p_true
        p[np.arange(n), 1 - label] = 1 - p_true
        return p

    shadow = _pair(probs(pruned), probs(original), label, member)
    attack = make_attack("pair_diff", num_classes=2)
    attack.fit(shadow, AttackSpec(names=("pair_diff",)))
    assert attack.direction == -1.0
    assert attack.decide(shadow).mean() == pytest.approx(0.5, abs=0.05)
    assert (attack.decide(shadow) == member).mean() > 0.95
    again = make_attack("pair_diff", num_classes=2)
    again.load_state_dict(attack.state_dict())
    np.testing.assert_array_equal(again.score(shadow), attack.score(shadow))


def test_pair_nn_reads_both_probability_vectors_and_the_label():
    feats = _pair(PRUNED, ORIGINAL, LABEL, MEMBER)
    attack = make_attack("pair_nn", num_classes=2)
    x = attack.inputs(feats)
    assert x.shape == (4, 6)
    np.testing.assert_allclose(x[:, :2], PRUNED, rtol=1e-6)
    np.testing.assert_allclose(x[:, 2:4], ORIGINAL, rtol=1e-6)
    np.testing.assert_array_equal(x[:, 4:], np.eye(2)[LABEL])


def test_every_attack_fits_on_pairs_and_pair_attacks_refuse_plain_features():
    rng = np.random.default_rng(1)
    n = 200
    label = rng.integers(0, 3, n)
    member = rng.random(n) < 0.5
    p1, p2 = rng.dirichlet(np.ones(3), n), rng.dirichlet(np.ones(3), n)
    shadow = _pair(p1, p2, label, member)
    fitted = fit_attacks(shadow, AttackSpec(names=("conf", "pair_sum", "pair_nn"), epochs=2),
                         num_classes=3)
    assert set(fitted) == {"conf", "pair_sum", "pair_nn"}
    # conf sees the pruned model's features only, as if they were plain.
    np.testing.assert_array_equal(fitted["conf"].score(shadow),
                                  fitted["conf"].score(_features(p1, label, member)))
    with pytest.raises(ValueError, match="pair_sum reads the unpruned original"):
        fitted["pair_sum"].score(_features(p1, label, member))


def test_pairs_pool_subset_and_check_their_samples():
    a = _pair(PRUNED, ORIGINAL, LABEL, MEMBER)
    pooled = pool([a, a])
    assert isinstance(pooled, PairedFeatures) and len(pooled.original) == 8
    part = pooled.subset(np.array([0, 5]))
    np.testing.assert_allclose(part.original.prob, np.asarray(ORIGINAL, np.float32)[[0, 1]])
    assert type(pool([_features(PRUNED, LABEL, MEMBER)])) is Features
    with pytest.raises(ValueError, match="same samples"):
        PairedFeatures.pair(_features(PRUNED, LABEL, MEMBER),
                            _features(ORIGINAL, LABEL, ~MEMBER))


def test_cells_with_unpruned_shadows_leave_pair_attacks_out():
    with_pair = AttackSpec(names=("conf", "pair_sum", "pair_nn"))
    plain = AttackSpec(names=("conf",))
    for knowledge in ("original", "pruning_unknown"):
        cell = CellSpec(knowledge=knowledge, attacks=with_pair)
        assert cell.attacks.names == ("conf",)
        assert cell.key() == CellSpec(knowledge=knowledge, attacks=plain).key()
    assert CellSpec(knowledge="full", attacks=with_pair).attacks == with_pair
    assert CellSpec(knowledge="method_unknown", attacks=with_pair).attacks == with_pair
    with pytest.raises(SpecError, match="pair attack needs pruned shadows"):
        CellSpec(knowledge="original", attacks=AttackSpec(names=("pair_sum",)))


def test_the_cell_command_refuses_a_pair_attack_it_cannot_run(tmp_path, capsys):
    rc = cell_main(["--knowledge", "original", "--attacks", "conf,pair_diff",
                    "--store", str(tmp_path / "s"), "--results", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pair_diff" in err and err.count("error") == 1
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.slow
def test_a_real_cell_pairs_the_victim_with_its_own_original(tmp_path):
    """Real MNIST-1D, real training, real files: the victim's original is the model the
    victim was pruned from, the shadows' originals theirs, and the pair leaks."""
    from mia_ray.evaluation import run_cell
    from mia_ray.pipeline import attack_features, ensure_features
    from mia_ray.results import ResultTables
    from mia_ray.store import ArtifactStore

    names = ("conf", "nn_cls", "pair_sum", "pair_diff", "pair_nn")
    cell = CellSpec(dataset=DatasetSpec(name="mnist1d", num_shadows=1,
                                        root=str(tmp_path / "data")),
                    prune=PruneSpec("l1_unstructured", 0.5),
                    attacks=AttackSpec(names=names, epochs=10),
                    train=TrainSpec(max_epochs=30, patience=30),
                    finetune=TrainSpec(max_epochs=5, patience=5))
    store, results = ArtifactStore(str(tmp_path / "store")), ResultTables(str(tmp_path / "r"))
    rows = {r["attack"]: r for r in run_cell(cell, store, results)}
    assert set(rows) == set(names)
    victim = cell.victim()
    feats = attack_features(victim, cell.attacks, store)
    original = ensure_features(victim.original(), cell.attacks, store)
    np.testing.assert_array_equal(feats.original.prob, original.prob)
    assert not np.allclose(feats.prob, feats.original.prob)  # two models, not one twice
    # The original overfits 30 epochs of MNIST-1D; the pair sees that.
    assert rows["pair_sum"]["auc"] > 0.6
    table = pd.read_parquet(tmp_path / "r" / "attacks")
    assert table["epsilon_audited"].isna().all()  # no DP-SGD, no epsilon to audit


@pytest.mark.slow
def test_the_audit_pairs_each_variant_with_the_audited_model(tmp_path):
    """Asked for by name, the pair attacks audit each pruned variant beside the user's
    model (its original); the original's own cell leaves them out."""
    from sklearn.datasets import load_digits

    from mia_ray.audit.cli import main as audit_main
    from mia_ray.audit.demo import train_overfit

    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "scans.npz", features=(x.reshape(-1, 8, 8) * 16).astype(np.uint8),
             labels=y)
    members = np.sort(np.random.default_rng(0).choice(len(y), 300, replace=False))
    np.save(tmp_path / "members.npy", members)
    train_overfit(resolve_dataset(str(tmp_path / "scans.npz")), members,
                  tmp_path / "model.pt", epochs=10)
    rc = audit_main(["--model", str(tmp_path / "model.pt"), "--data",
                     str(tmp_path / "scans.npz"), "--members", str(tmp_path / "members.npy"),
                     "--storage", str(tmp_path / "out"), "--in-process",
                     "--methods", "l1_unstructured", "--sparsities", "0.5", "--shadows", "1",
                     "--epochs", "5", "--finetune-epochs", "2", "--attack-epochs", "2",
                     "--attacks", "conf,pair_sum,pair_nn"])
    assert rc == 0
    attacks = pd.read_parquet(tmp_path / "out" / "attacks")
    by_method = attacks.groupby("method")["attack"].apply(set)
    assert by_method["none"] == {"conf"}
    assert by_method["l1_unstructured"] == {"conf", "pair_sum", "pair_nn"}
    summary = pd.read_parquet(tmp_path / "out" / "audit.parquet")
    assert len(summary) == 2 and summary["auc"].between(0, 1).all()
