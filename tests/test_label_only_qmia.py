"""The label-only attack and QMIA: rules by hand and against the authors' code, the
perturbation counts, the options' messages, and real runs on MNIST-1D and digits."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mia_ray.attacks import make_attack
from mia_ray.attacks.label_only import label_only_score
from mia_ray.attacks.qmia import (
    MAX_INPUT_DIM,
    fit_quantile_regressor,
    input_representation,
    qmia_decision,
    qmia_scores,
)
from mia_ray.attacks.reference import ReferenceOutputs, true_class_logit
from mia_ray.cell import main as cell_main
from mia_ray.data import load_pool
from mia_ray.errors import SpecError
from mia_ray.evaluation import run_cell
from mia_ray.features import Features, extract_features, label_robustness
from mia_ray.knowledge import CellSpec
from mia_ray.metrics import roc_auc
from mia_ray.models import build_model
from mia_ray.pipeline import features_key
from mia_ray.predict import predict_proba
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec, DatasetSpec, ModelSpec, PruneSpec, TrainSpec
from mia_ray.store import ArtifactStore
from mia_ray.training import fit

# ---- label-only: the score rule ---------------------------------------------------------


def _authors_rule(correct: np.ndarray, perturbed_correct: np.ndarray) -> list[float]:
    """Choquette-Choo et al.'s continuous_rand_robust (cchoquette/membership-inference,
    attack_features.py), restated: per sample, the mean correctness of its noisy
    predictions if the clean prediction is correct, else 0."""
    out = []
    for i in range(len(correct)):
        if correct[i]:
            out.append(float(np.mean(perturbed_correct[i])))
        else:
            out.append(0.0)
    return out


def test_label_only_score_by_hand_and_as_the_authors_rule():
    assert label_only_score(np.array([True, False, True]),
                            np.array([0.25, 0.9, 1.0])).tolist() == [0.25, 0.0, 1.0]
    rng = np.random.default_rng(0)
    correct = rng.random(200) < 0.7
    perturbed = rng.random((200, 16)) < rng.random((200, 1))  # M = 16 noisy queries each
    ours = label_only_score(correct, perturbed.mean(axis=1))
    np.testing.assert_allclose(ours, _authors_rule(correct, perturbed))


class _Linear1D(torch.nn.Module):
    """Class 1 iff x > 0: a sample at x = d stays correct under N(0, s^2) noise with
    probability Phi(d / s)."""

    def forward(self, x):
        return torch.cat([-x, x], dim=1)


def test_label_robustness_counts_correct_noisy_labels():
    x = torch.tensor([[0.0], [0.2], [5.0], [-5.0]])
    label = torch.tensor([1, 1, 1, 1])
    gen = torch.Generator().manual_seed(0)
    robust = label_robustness(_Linear1D(), x, label, queries=4000, std=0.2, generator=gen,
                              max_inputs=1000)  # several chunks of draws
    assert robust.shape == (4,)
    np.testing.assert_allclose(robust.numpy(), [0.5, norm.cdf(1.0), 1.0, 0.0], atol=0.025)
    # Every value is a count over M; the same generator state gives the same counts.
    few = label_robustness(_Linear1D(), x, label, queries=7, std=0.2,
                           generator=torch.Generator().manual_seed(3))
    again = label_robustness(_Linear1D(), x, label, queries=7, std=0.2,
                             generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(few, again)
    np.testing.assert_allclose(few.numpy() * 7, np.round(few.numpy() * 7), atol=1e-5)


def _features(robust, member, prob=None):
    n = len(member)
    prob = np.tile([[0.2, 0.8]], (n, 1)) if prob is None else prob
    return Features(prob, np.zeros((n, 2)), np.ones(n, dtype=int), member, robust=robust)


def test_label_only_attack_learns_one_threshold_on_the_shadows():
    shadow = _features(np.array([1.0, 0.875, 0.75, 0.5, 0.25, 0.125]),
                       np.array([True, True, True, False, False, False]))
    attack = make_attack("label_only", num_classes=2)
    attack.fit(shadow, AttackSpec(names=("label_only",)))
    assert attack.global_threshold == 0.75  # the smallest threshold separating them
    target = _features(np.array([0.8125, 0.625]), np.array([True, False]),
                       prob=np.array([[0.2, 0.8], [0.9, 0.1]]))  # the second is misclassified
    np.testing.assert_allclose(attack.score(target), [0.0625, -0.75])
    assert attack.decide(target).tolist() == [True, False]
    with pytest.raises(ValueError, match="no 'robust' column"):
        attack.score(_features(None, np.array([True, False])))


def test_features_carry_robust_through_subset_concat_and_files():
    a = _features(np.array([0.5, 1.0]), np.array([True, False]))
    both = Features.concat([a, a])
    assert both.robust.tolist() == [0.5, 1.0, 0.5, 1.0]
    assert both.subset(np.array([1, 2])).robust.tolist() == [1.0, 0.5]
    back = Features.from_arrays(both.to_arrays())
    np.testing.assert_array_equal(back.robust, both.robust)
    plain = _features(None, np.array([True, False]))
    assert "robust" not in plain.to_arrays()
    assert Features.from_arrays(plain.to_arrays()).robust is None
    assert Features.concat([a, plain]).robust is None  # only if every part has it
    with pytest.raises(ValueError, match="robust has shape"):
        _features(np.zeros(3), np.array([True, False]))


# ---- the option M ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 10**6, 2.5, True])
def test_bad_label_queries_is_one_message(bad):
    with pytest.raises(SpecError, match=r"label_queries=.* is not allowed: expected an "
                                        r"integer in \[1, 4096\]"):
        AttackSpec(names=("conf", "label_only"), label_queries=bad)


def test_cell_command_refuses_bad_label_queries(capsys, tmp_path):
    code = cell_main(["--dataset", "mnist1d", "--attacks", "conf,label_only",
                      "--label-queries", "0", "--store", str(tmp_path / "s"),
                      "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["error: label_queries=0 is not allowed: expected an integer in [1, 4096]"]
    assert not (tmp_path / "s").exists()


def test_sweeps_and_audit_refuse_bad_label_queries(capsys, tmp_path):
    import sys
    from pathlib import Path

    from mia_ray.audit.cli import main as audit_main
    from mia_ray.resolution import resolve_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))
    import small_grid

    assert small_grid.main(["--dry-run", "--attacks", "conf,label_only",
                            "--label-queries", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "label_queries=-3 is not allowed" in err
    x, y = load_pool(DatasetSpec()).x, load_pool(DatasetSpec()).y
    np.savez(tmp_path / "glyphs.npz", features=x[:, 0], labels=y)  # (N, 8, 8) images
    np.save(tmp_path / "members.npy", np.arange(200))
    torch.save(build_model("small_cnn", resolve_dataset(str(tmp_path / "glyphs.npz")),
                           seed=0).state_dict(), tmp_path / "model.pt")
    code = audit_main(["--model", str(tmp_path / "model.pt"), "--data",
                       str(tmp_path / "glyphs.npz"), "--members", str(tmp_path / "members.npy"),
                       "--storage", str(tmp_path / "out"), "--label-queries", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "label_queries=0 is not allowed" in err
    assert not (tmp_path / "out").exists()


def test_m_enters_the_keys_only_with_the_label_only_attack():
    plain = AttackSpec(names=("conf",))
    assert AttackSpec(names=("conf",), label_queries=5).key() == plain.key()
    assert "label_queries" not in plain.key_dict()
    with_m = AttackSpec(names=("conf", "label_only"))
    assert AttackSpec(names=("conf", "label_only"), label_queries=5).key() != with_m.key()
    model = ModelSpec(dataset=DatasetSpec(), arch="fc")
    assert features_key(model, AttackSpec(names=("conf",), label_queries=5)) == \
        features_key(model, plain)
    assert features_key(model, with_m) != features_key(model, plain)


def test_label_only_draws_leave_the_sensitivity_draws_unchanged():
    model = build_model("fc", "digits", seed=0)
    pool = load_pool(DatasetSpec())
    members, nonmembers = (pool.x[:40], pool.y[:40]), (pool.x[40:80], pool.y[40:80])
    kw = dict(draws=3, eps=1e-3, seed=7, device="cpu", batch_size=16)
    plain = extract_features(model, members, nonmembers, **kw)
    labelled = extract_features(model, members, nonmembers, label_queries=8, label_seed=1, **kw)
    assert plain.robust is None and labelled.robust.shape == (80,)
    np.testing.assert_array_equal(plain.sens, labelled.sens)
    other_seed = extract_features(model, members, nonmembers, label_queries=8, label_seed=2,
                                  **kw)
    assert not np.array_equal(other_seed.robust, labelled.robust)


# ---- QMIA -----------------------------------------------------------------------------


def test_qmia_margin_and_decision_by_hand():
    margins = qmia_scores(np.array([2.0, 0.5, 1.0]), np.array([1.0, 1.0, 1.0]))
    assert margins.tolist() == [1.0, -0.5, 0.0]
    assert qmia_decision(margins).tolist() == [True, False, False]  # strictly above


def test_score_is_the_authors_signed_logit():
    """amazon-science/quantile-mia, tabular_QMIA/qmia_ACS.py scores a binary model's
    probability p of class 1 as (log p - log(1 - p)) * (2 y - 1)."""
    p1 = np.random.default_rng(1).uniform(0.01, 0.99, 50)
    y = np.random.default_rng(2).integers(0, 2, 50)
    theirs = (np.log(p1) - np.log(1 - p1)) * (2 * y - 1)
    ours = true_class_logit(np.column_stack([1 - p1, p1]), y)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_quantile_regressor_covers_its_quantile_and_catches_members():
    """Non-member scores ~ N(3 x, 1): the predicted 95% quantile follows 3 x + 1.645, so
    about 5% of fresh non-members exceed it; members, lifted by 2, mostly do."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4000, 1))
    label = rng.integers(0, 3, 4000)
    score = 3 * x[:, 0] + rng.standard_normal(4000)
    regressor = fit_quantile_regressor(x, label, score, alpha=0.05, num_classes=3)
    fresh = rng.uniform(-1, 1, (3000, 1))
    design = np.column_stack([fresh, rng.integers(0, 3, 3000)])
    q = regressor.predict(design)
    error = np.abs(q - (3 * fresh[:, 0] + norm.ppf(0.95)))
    assert error.mean() < 0.35  # a step function of 200 trees on 4000 noisy points
    out = 3 * fresh[:, 0] + rng.standard_normal(3000)
    assert 0.03 < qmia_decision(qmia_scores(out, q)).mean() < 0.08
    members = out + 2.0
    assert qmia_decision(qmia_scores(members, q)).mean() > 0.4
    # A pooled threshold cannot separate these as well: x spreads the scores more than
    # membership does, and the per-sample quantile removes that spread.
    member = np.r_[np.ones(3000), np.zeros(3000)]
    per_sample = roc_auc(member, np.r_[qmia_scores(members, q), qmia_scores(out, q)])
    pooled = roc_auc(member, np.r_[members, out])
    assert per_sample > pooled + 0.1
    with pytest.raises(ValueError, match="alpha must lie in"):
        fit_quantile_regressor(x, label, score, alpha=1.0, num_classes=3)


def test_input_representation_keeps_narrow_inputs_and_projects_wide_ones():
    narrow = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(input_representation(narrow), narrow)
    wide = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    rep = input_representation(wide)
    assert rep.shape == (5, MAX_INPUT_DIM)
    np.testing.assert_array_equal(rep[:2], input_representation(wide[:2]))  # one map


def test_reference_outputs_check_the_inputs_shapes():
    base = dict(audit_prob=np.full((1, 4, 2), 0.5), population_prob=np.full((1, 3, 2), 0.5),
                population_label=np.zeros(3, int), population_out=np.ones((1, 3), bool),
                target_population_prob=np.full((3, 2), 0.5))
    ReferenceOutputs(**base, audit_inputs=np.zeros((4, 5)), population_inputs=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="population_inputs has shape"):
        ReferenceOutputs(**base, audit_inputs=np.zeros((4, 5)),
                         population_inputs=np.zeros((3, 6)))
    with pytest.raises(ValueError, match="together"):
        ReferenceOutputs(**base, audit_inputs=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="qmia needs the inputs"):
        make_attack("qmia", num_classes=2).fit(ReferenceOutputs(**base), AttackSpec())


# ---- real tiny runs on MNIST-1D -------------------------------------------------------

OVERFIT = TrainSpec(max_epochs=80, patience=80, batch_size=32)
MNIST1D = DatasetSpec(name="mnist1d")


@pytest.fixture(scope="module")
def mnist1d_models():
    """fc models on disjoint 150-sample parts of MNIST-1D, no early stop: they overfit."""
    pool = load_pool(MNIST1D)
    order = np.random.default_rng(0).permutation(len(pool.y))
    parts = {name: order[i * 150:(i + 1) * 150] for i, name in enumerate(
        ["members", "nonmembers", "dev", "other", "shadow_in", "shadow_out"])}
    public = order[900:1500]

    def trained(part, seed):
        model = build_model("fc", "mnist1d", seed=seed)
        fit(model, (pool.x[parts[part]], pool.y[parts[part]]),
            (pool.x[parts["dev"]], pool.y[parts["dev"]]), OVERFIT, seed=seed, device="cpu")
        return model

    def data(part):
        return pool.x[parts[part]], pool.y[parts[part]]

    return {"pool": pool, "parts": parts, "public": public, "data": data,
            "overfit": trained("members", 1), "unseen": trained("other", 2),
            "shadow": trained("shadow_in", 3)}


def _auc(feats, score):
    return roc_auc(feats.member, score)


@pytest.mark.slow
def test_label_only_beats_chance_on_an_overfit_victim(mnist1d_models):
    d = mnist1d_models
    kw = dict(draws=1, eps=1e-3, seed=0, device="cpu", label_queries=32)
    shadow = extract_features(d["shadow"], d["data"]("shadow_in"), d["data"]("shadow_out"),
                              label_seed=1, **kw)
    attack = make_attack("label_only", num_classes=10)
    attack.fit(shadow, AttackSpec(names=("label_only",)))
    victims = {name: extract_features(d[name], d["data"]("members"), d["data"]("nonmembers"),
                                      label_seed=2, **kw) for name in ("overfit", "unseen")}
    assert _auc(victims["overfit"], attack.score(victims["overfit"])) > 0.6
    assert _auc(victims["unseen"], attack.score(victims["unseen"])) == pytest.approx(0.5,
                                                                                     abs=0.1)


@pytest.mark.slow
def test_qmia_beats_chance_on_an_overfit_victim_with_no_shadow(mnist1d_models):
    d = mnist1d_models
    pool, parts, public = d["pool"], d["parts"], d["public"]
    audit = np.concatenate([parts["members"], parts["nonmembers"]])
    for name, low, high in (("overfit", 0.6, 1.0), ("unseen", 0.4, 0.6)):
        victim = d[name]
        feats = Features(predict_proba(victim, pool.x[audit]), np.zeros((300, 10)),
                         pool.y[audit], np.arange(300) < 150)
        outputs = ReferenceOutputs(  # no reference model: a placeholder of K = 1
            audit_prob=np.full((1, 300, 10), 0.1), population_prob=np.full((1, 600, 10), 0.1),
            population_label=pool.y[public], population_out=np.ones((1, 600), bool),
            target_population_prob=predict_proba(victim, pool.x[public]),
            audit_inputs=input_representation(pool.x[audit]),
            population_inputs=input_representation(pool.x[public]))
        attack = make_attack("qmia", num_classes=10)
        attack.fit(outputs, AttackSpec(names=("qmia",)))
        score, decision = attack.score(feats), attack.decide(feats)
        assert low < _auc(feats, score) < high, name
        assert decision.dtype == bool


@pytest.mark.slow
def test_a_cell_runs_label_only_and_qmia_end_to_end(tmp_path):
    cell = CellSpec(dataset=DatasetSpec(num_shadows=1), arch="fc", knowledge="full",
                    prune=PruneSpec("l1_unstructured", 0.5),
                    attacks=AttackSpec(names=("conf", "label_only", "qmia"), epochs=1,
                                       sens_draws=2, label_queries=8),
                    train=TrainSpec(max_epochs=3), finetune=TrainSpec(max_epochs=2))
    store = ArtifactStore(str(tmp_path / "store"))
    rows = run_cell(cell, store, ResultTables(str(tmp_path / "results")),
                    device=torch.device("cpu"))
    assert [r["attack"] for r in rows] == ["conf", "label_only", "qmia"]
    for r in rows:
        assert 0 <= r["auc"] <= 1 and 0 <= r["accuracy"] <= 1
    # The victim's stored features carry the label-only column, counted over M = 8.
    from mia_ray.pipeline import ensure_features
    robust = ensure_features(cell.victim(), cell.attacks, store).robust
    np.testing.assert_allclose(robust * 8, np.round(robust * 8), atol=1e-5)
