"""Online LiRA and RMIA: the math against hand-worked values, the reference models'
inclusion draw, keys and pipeline, and bad --references values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mia_ray.attacks import make_attack
from mia_ray.attacks.online import dominance, lira_online_scores, rmia_online_scores
from mia_ray.attacks.reference import ReferenceOutputs
from mia_ray.data import load_pool, split_for
from mia_ray.data.splits import inclusion, reference_population
from mia_ray.errors import SpecError
from mia_ray.features import Features
from mia_ray.grid import GridSpec
from mia_ray.knowledge import CellSpec
from mia_ray.planner import cohorts, plan
from mia_ray.resolution import resolve_dataset, resolve_members
from mia_ray.specs import AttackSpec, DatasetSpec, DefenseSpec, PruneSpec

ONLINE = AttackSpec(names=("conf", "lira_online", "rmia_online"), epochs=1)


def cell(n: int, **kw) -> CellSpec:
    return CellSpec(dataset=DatasetSpec(num_shadows=2), attacks=ONLINE, num_references=n, **kw)


# --- LiRA online, by hand ---------------------------------------------------------------

def test_lira_online_fixed_variance_by_hand():
    # Two samples, four references (IN: 0 and 3 for both samples). Centres are medians:
    # sample 0: IN {4, 6} -> 5, OUT {0, 2} -> 1; sample 1: IN {1, 3} -> 2, OUT {-1, -1} -> -1.
    # One sigma for both sides, the std (ddof 0) of all IN values {4, 6, 1, 3}:
    # mean 3.5, squares 0.25 + 6.25 + 6.25 + 0.25 = 13, s^2 = 13 / 4.
    # Lambda = ((phi - mu_out)^2 - (phi - mu_in)^2) / (2 s^2):
    # phi = 4: (9 - 1) / 6.5 = 16 / 13;  phi = 0: (1 - 4) / 6.5 = -6 / 13.
    ref_phi = np.array([[4.0, 1.0], [0.0, -1.0], [2.0, -1.0], [6.0, 3.0]])
    ref_in = np.array([[1, 1], [0, 0], [0, 0], [1, 1]], dtype=bool)
    got = lira_online_scores(np.array([4.0, 0.0]), ref_phi, ref_in, fixed_variance=True)
    np.testing.assert_allclose(got, [16 / 13, -6 / 13])


def test_lira_online_per_sample_variance_by_hand():
    # IN {4, 8}: median 6, std (ddof 0) 2. OUT {0, 2}: median 1, std 1. phi = 4:
    # Lambda = (-ln 2 - 4 / 8) - (-ln 1 - 9 / 2) = 4 - ln 2
    got = lira_online_scores(np.array([4.0]), np.array([[4.0], [0.0], [2.0], [8.0]]),
                             np.array([[1], [0], [0], [1]], dtype=bool), fixed_variance=False)
    np.testing.assert_allclose(got, [4 - math.log(2)])


def test_lira_online_with_two_references_uses_the_spread_of_all_in_values():
    # N = 2: one value per side and sample; sigma is the std of all IN values {2, 4}: 1.
    # Lambda = ((phi - mu_out)^2 - (phi - mu_in)^2) / 2:
    # sample 0 (mu_in 2, mu_out 0, phi 1): (1 - 1) / 2 = 0
    # sample 1 (mu_in 4, mu_out 2, phi 4): (4 - 0) / 2 = 2
    ref_phi = np.array([[2.0, 2.0], [0.0, 4.0]])
    ref_in = np.array([[1, 0], [0, 1]], dtype=bool)
    got = lira_online_scores(np.array([1.0, 4.0]), ref_phi, ref_in)
    np.testing.assert_allclose(got, [0.0, 2.0])


def test_lira_online_refuses_a_sample_without_in_or_out_references():
    with pytest.raises(ValueError, match="one IN and one OUT"):
        lira_online_scores(np.zeros(2), np.zeros((2, 2)), np.array([[1, 1], [1, 0]], bool))
    with pytest.raises(ValueError, match="at least 2 IN and 2 OUT"):
        lira_online_scores(np.zeros(1), np.zeros((2, 1)), np.array([[1], [0]], bool),
                           fixed_variance=False)


# --- RMIA online, by hand ---------------------------------------------------------------

def test_rmia_online_by_hand():
    # With two references the 20% trimmed mean cuts int(0.4) = 0 models: the plain mean.
    # Pr(x) = mean over both references: x0 (0.5 + 0.3) / 2 = 0.4, x1 0.2.
    # LR(x) = target / Pr(x): x0 0.8 / 0.4 = 2, x1 0.1 / 0.2 = 0.5.
    # Pr(z): 0.5, 0.2, 0.9; LR(z) = 0.5 / 0.5 = 1, 0.4 / 0.2 = 2, 0.45 / 0.9 = 0.5.
    # x0 beats z with LR(x)/LR(z) > 1: 2/1 yes, 2/2 no, 2/0.5 yes -> 2/3.
    # x1: 0.5, 0.25, 1 -> none -> 0.
    got = rmia_online_scores(np.array([0.8, 0.1]), np.array([[0.5, 0.2], [0.3, 0.2]]),
                             np.array([0.5, 0.4, 0.45]),
                             np.array([[0.5, 0.1, 0.9], [0.5, 0.3, 0.9]]))
    np.testing.assert_allclose(got, [2 / 3, 0.0])
    # gamma 2: x0 needs LR(z) < 1: only z2 (0.5) -> 1/3.
    np.testing.assert_allclose(dominance([2.0], [1.0, 2.0, 0.5], 2.0), [1 / 3])


def test_online_attacks_refuse_outputs_without_inclusion():
    rng = np.random.default_rng(0)
    prob = rng.dirichlet(np.ones(3), size=4)
    feats = Features(prob=prob, sens=np.zeros_like(prob), label=np.array([0, 1, 2, 0]),
                     member=np.array([1, 1, 0, 0], bool))
    outputs = ReferenceOutputs(audit_prob=np.stack([prob, prob]),
                               population_prob=np.stack([prob, prob]),
                               population_label=feats.label,
                               population_out=np.ones((2, 4), bool),
                               target_population_prob=prob)
    for name in ("lira_online", "rmia_online"):
        attack = make_attack(name, num_classes=3)
        assert attack.learns_from == "online_references"
        with pytest.raises(ValueError, match="--references"):
            attack.fit(outputs, ONLINE)


# --- the inclusion draw -----------------------------------------------------------------

@pytest.mark.parametrize("n_refs", [2, 6, 16, 64])
def test_every_audited_and_population_sample_is_in_for_exactly_half(n_refs):
    ds = DatasetSpec(num_shadows=2)
    n = len(load_pool(ds).y)
    population, dev = reference_population(ds, n)
    victim = split_for(ds, "victim", 0, n)
    audited = np.concatenate([victim.train, victim.test])
    assert np.isin(audited, population).all() and not np.isin(dev, population).any()
    counts = inclusion(ds, n_refs, n, population).sum(axis=0)
    assert (counts == n_refs // 2).all()


def test_a_reference_trains_on_the_victims_number_of_samples_and_is_tested_on_the_rest():
    ds = DatasetSpec(num_shadows=2)
    n = len(load_pool(ds).y)
    population, dev = reference_population(ds, n)
    victim = split_for(ds, "victim", 0, n)
    # The population is the audited samples: members and as many non-members.
    np.testing.assert_array_equal(population, np.sort(np.concatenate([victim.train,
                                                                      victim.test])))
    a, b = split_for(ds, "reference", 4, n), split_for(ds, "reference", 5, n)
    assert len(a.train) == len(b.train) == len(victim.train)
    assert all(len(split_for(ds, "reference", i, n).train) == len(victim.train)
               for i in range(16))
    np.testing.assert_array_equal(a.test, b.train)  # a pair's halves are complements
    np.testing.assert_array_equal(a.dev, dev)
    c = split_for(ds, "reference", 6, n)
    assert not np.array_equal(a.train, c.train)  # another pair, another draw
    # Another seed draws another population split.
    other = DatasetSpec(num_shadows=2, seed=1)
    assert not np.array_equal(split_for(other, "reference", 4, n).train, a.train)


# --- keys, pipeline and planning --------------------------------------------------------

def test_reference_keys_hold_index_and_draw_but_not_n():
    small, large = cell(16), cell(64)
    assert small.key() != large.key()
    assert [r.key() for r in small.references()] == [r.key() for r in large.references()[:16]]
    assert len({r.key() for r in large.references()}) == 64
    ref = small.references()[3]
    assert ref.key_dict()["inclusion"] == "audited_halves" and ref.key_dict()["index"] == 3
    # A cell without references keeps the key it had before the field existed.
    assert "num_references" not in CellSpec(knowledge="original").key_dict()


def test_pruned_references_follow_the_shadows_pipeline():
    prune, ppb = PruneSpec("l1_unstructured", 0.5), DefenseSpec("ppb", 4.0)
    full = cell(4, knowledge="full", prune=prune, defense=ppb)
    assert all(r.prune == prune and r.defense == ppb for r in full.references())
    assert [r.parent().key() for r in full.references()] == \
        [r.key() for r in cell(4, knowledge="original").references()]
    unknown = cell(4, knowledge="pruning_unknown", prune=prune, defense=ppb)
    original = cell(4, knowledge="original")
    assert [r.key() for r in unknown.references()] == [r.key() for r in original.references()]
    assert all(r.prune is None for r in unknown.references())


def test_plan_lists_references_once_and_stacks_them_with_their_cohort():
    grid = GridSpec(methods=("l1_unstructured",), sparsities=(0.5,),
                    knowledge=("original", "full", "pruning_unknown"), defenses=("none",),
                    strengths=(0.0,), num_shadows=2, num_references=4, attacks=ONLINE)
    p = plan(grid)
    refs = [s for s in p.models if s.role == "reference"]
    assert len(refs) == 8  # 4 unpruned (shared by three cells) and 4 pruned
    assert sorted(len(g) for g in cohorts(p.models)) == [7, 7]  # victim + 2 shadows + 4


@pytest.mark.parametrize("value", [3, -2, 258, 2.0, True])
def test_bad_reference_counts_fail_with_one_message(value):
    with pytest.raises(SpecError, match=r"references=.* expected an even integer in \[0, 256\]"):
        cell(value)
    with pytest.raises(SpecError, match="references"):
        GridSpec(num_references=value)


def test_online_attacks_without_references_are_refused():
    with pytest.raises(SpecError, match="references=0 .*lira_online, rmia_online"):
        cell(0)


@pytest.mark.parametrize("argv", [["--references", "7"], ["--attacks", "lira_online"]])
def test_cell_command_refuses_bad_references_before_any_work(argv, tmp_path, capsys):
    from mia_ray.cell import main

    code = main([*argv, "--store", str(tmp_path / "s"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "references=" in err
    assert not (tmp_path / "s").exists()


def test_sweep_option_reaches_the_grid():
    import argparse

    from mia_ray.engine.cli import add_sweep_args, apply_overrides

    p = argparse.ArgumentParser()
    add_sweep_args(p, storage="x")
    args = p.parse_args(["--references", "8", "--attacks", "conf,lira_online", "--shadows", "2"])
    grid = apply_overrides(GridSpec(methods=("l1_unstructured",), sparsities=(0.5,),
                                    knowledge=("full",), defenses=("none",), strengths=(0.0,)),
                           args)
    assert grid.num_references == 8 and all(len(c.references()) == 8 for c in grid.cells())
    with pytest.raises(SpecError, match="references=9"):
        apply_overrides(grid, p.parse_args(["--references", "9"]))


def test_audit_takes_references_and_adds_the_online_attacks_only_with_them():
    from mia_ray.audit.cli import _attacks, parse_args

    plain = parse_args(["--model", "m.pt", "--data", "blobs.npz", "--members", "m.npy"])
    assert plain.references == 0 and not {"lira_online", "rmia_online"} & set(_attacks(plain))
    online = parse_args(["--model", "m.pt", "--data", "blobs.npz", "--members", "m.npy",
                         "--references", "8"])
    assert online.references == 8 and {"lira_online", "rmia_online"} <= set(_attacks(online))


def test_an_audits_references_draw_from_its_members_audited_non_members_and_shadow_pool(
        tmp_path):
    from mia_ray.data.members import members_hash

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "blobs.npz", features=rng.normal(size=(200, 4)).astype(np.float32),
             labels=np.arange(200) % 2)
    members = np.arange(0, 200, 3)
    np.save(tmp_path / "members.npy", members)
    ds = resolve_members(resolve_dataset(str(tmp_path / "blobs.npz"), num_shadows=2),
                         str(tmp_path / "members.npy"))
    assert ds.members == members_hash(members)
    population, dev = reference_population(ds, 200)
    victim = split_for(ds, "victim", 0, 200)
    np.testing.assert_array_equal(victim.train, members)
    assert np.isin(np.concatenate([victim.train, victim.test]), population).all()
    assert not np.isin(dev, population).any()
    # 67 members, 66 audited non-members: one shadow-pool sample pads the population
    # to 134, so every reference trains on 67 samples, as the audited model did.
    assert len(population) == 2 * len(members)
    padding = np.setdiff1d(population, np.concatenate([victim.train, victim.test]))
    assert len(padding) == 1 and not np.isin(padding, victim.dev).any()
    assert all(len(split_for(ds, "reference", i, 200).train) == len(members) for i in range(4))
    assert (inclusion(ds, 4, 200, population).sum(axis=0) == 2).all()


# --- references with nothing to use them ------------------------------------------------

def test_references_without_an_online_attack_are_refused_naming_the_attacks_that_need_them():
    plain = AttackSpec(names=("conf", "lira"), epochs=1)
    expected = r"references=8 .*0 when no online attack.*lira_online, rmia_online"
    with pytest.raises(SpecError, match=expected):
        CellSpec(dataset=DatasetSpec(num_shadows=2), attacks=plain, num_references=8)
    with pytest.raises(SpecError, match=expected):
        GridSpec(num_references=8, attacks=plain)


def test_cell_command_refuses_references_without_an_online_attack(tmp_path, capsys):
    from mia_ray.cell import main

    code = main(["--references", "8", "--attacks", "conf,lira", "--store", str(tmp_path / "s"),
                 "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1
    assert "references=8" in err and "lira_online, rmia_online" in err
    assert not (tmp_path / "s").exists()


def test_sweep_and_audit_refuse_references_without_an_online_attack(tmp_path, capsys):
    import argparse

    from mia_ray.audit.cli import main as audit
    from mia_ray.engine.cli import add_sweep_args, apply_overrides

    p = argparse.ArgumentParser()
    add_sweep_args(p, storage="x")
    grid = GridSpec(methods=("l1_unstructured",), sparsities=(0.5,), knowledge=("full",),
                    defenses=("none",), strengths=(0.0,))
    with pytest.raises(SpecError, match="references=4 .*lira_online, rmia_online"):
        apply_overrides(grid, p.parse_args(["--references", "4", "--attacks", "conf"]))

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "blobs.npz", features=rng.normal(size=(60, 4)).astype(np.float32),
             labels=np.arange(60) % 2)
    np.save(tmp_path / "members.npy", np.arange(0, 60, 3))
    import torch

    from mia_ray.models import build_model

    torch.save(build_model("fc", resolve_dataset(str(tmp_path / "blobs.npz")),
                           seed=1).state_dict(), tmp_path / "model.pt")
    code = audit(["--model", str(tmp_path / "model.pt"), "--arch", "fc",
                  "--data", str(tmp_path / "blobs.npz"), "--members",
                  str(tmp_path / "members.npy"), "--storage", str(tmp_path / "out"),
                  "--references", "4", "--attacks", "conf"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "lira_online, rmia_online" in err
