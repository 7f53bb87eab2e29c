"""LiRA and RMIA: analytic AUCs on synthetic scores, values by hand, a real run on digits."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mia_ray.attacks import (
    ATTACKS_REGISTRY,
    Knowledge,
    fit_attack_sets,
    fit_attacks,
    make_attack,
)
from mia_ray.attacks.reference import (
    DEFAULT_A,
    ReferenceOutputs,
    lira_decision,
    lira_offline_scores,
    offline_marginal,
    rmia_decision,
    rmia_offline_scores,
    true_class_logit,
    true_class_prob,
)
from mia_ray.data import load_pool, split_for
from mia_ray.errors import SpecError
from mia_ray.evaluation import reference_outputs, run_cell
from mia_ray.features import Features
from mia_ray.knowledge import CellSpec
from mia_ray.metrics import balanced_accuracy, roc_auc
from mia_ray.models import build_model
from mia_ray.predict import predict_proba
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec, DatasetSpec, DefenseSpec, PruneSpec, TrainSpec
from mia_ray.store import ArtifactStore
from mia_ray.training import fit

# Opacus's per-sample hooks on a first layer whose input needs no gradient; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")



# ---- pure functions on constructed signals with a known AUC ----------------------------

N = 10_000  # members and as many non-members: the AUC's standard error is about 0.004
TOL = 0.015


def _member() -> np.ndarray:
    return np.arange(2 * N) < N


def test_lira_fixed_variance_matches_the_analytic_auc():
    """OUT signals N(mu_i, 1); targets N(mu_i, 1) out, N(mu_i + d, 1) in.

    With the mean estimated from K references and one variance for all samples, the
    score ranks as phi - mu_hat, which is N(d, 1 + 1/K) for members and N(0, 1 + 1/K)
    for non-members, so AUC = Phi(d / sqrt(2 (1 + 1/K))) and the decision phi > mu_hat
    has TPR Phi(d / sqrt(1 + 1/K)), TNR 1/2.
    """
    rng = np.random.default_rng(0)
    k, d = 8, 1.0
    mu = rng.normal(0, 3, 2 * N)
    ref = mu + rng.normal(size=(k, 2 * N))
    target = mu + rng.normal(size=2 * N) + d * _member()
    scores = lira_offline_scores(target, ref)  # K = 8 < 32: the pooled variance
    np.testing.assert_array_equal(scores, lira_offline_scores(target, ref, fixed_variance=True))
    spread = np.sqrt(1 + 1 / k)
    assert roc_auc(_member(), scores) == pytest.approx(norm.cdf(d / (np.sqrt(2) * spread)),
                                                       abs=TOL)
    expected_ba = 0.5 * (norm.cdf(d / spread) + 0.5)
    assert balanced_accuracy(_member(), lira_decision(scores)) == pytest.approx(expected_ba,
                                                                               abs=TOL)


def test_lira_per_sample_variance_matches_the_analytic_auc_and_beats_pooling():
    """Per-sample spreads s_i: targets N(mu_i + d s_i * member, s_i^2). With K = 64 the
    per-sample test standardises each sample: AUC ~ Phi(d / sqrt(2 (1 + 1/K))). One
    pooled variance cannot, and loses power."""
    rng = np.random.default_rng(1)
    k, d = 64, 1.0
    mu = rng.normal(0, 3, 2 * N)
    s = np.exp(rng.uniform(np.log(0.2), np.log(5.0), 2 * N))
    ref = mu + s * rng.normal(size=(k, 2 * N))
    target = mu + s * (rng.normal(size=2 * N) + d * _member())
    per_sample = roc_auc(_member(), lira_offline_scores(target, ref))  # K >= 32: per sample
    assert per_sample == pytest.approx(norm.cdf(d / np.sqrt(2 * (1 + 1 / k))), abs=TOL)
    pooled = roc_auc(_member(), lira_offline_scores(target, ref, fixed_variance=True))
    assert pooled < per_sample - 0.03


def test_lira_one_reference_and_bad_shapes():
    ref = np.array([[0.0, 1.0, 2.0, 3.0]])
    scores = lira_offline_scores(np.array([0.0, 1.0, 5.0, 3.0]), ref)
    # K = 1: the spread of all reference values, std([0, 1, 2, 3]) = sqrt(1.25).
    np.testing.assert_allclose(scores, -norm.logsf(np.array([0, 0, 3, 0]) / np.sqrt(1.25)))
    assert not lira_decision(scores)[0] and lira_decision(scores)[2]
    with pytest.raises(ValueError, match="2 reference"):
        lira_offline_scores(np.zeros(4), ref, fixed_variance=False)
    with pytest.raises(ValueError, match="K, n"):
        lira_offline_scores(np.zeros(3), ref)


def test_true_class_logit_is_stable_at_saturation():
    prob = np.array([[0.8, 0.15, 0.05], [1.0, 1e-12, 0.0], [0.0, 0.5, 0.5]], dtype=np.float32)
    phi = true_class_logit(prob, np.array([0, 0, 0]))
    assert phi[0] == pytest.approx(np.log(0.8 / 0.2), rel=1e-6)
    # 1 - p_y is 0 in float32; the other classes' sum still resolves it.
    assert phi[1] == pytest.approx(np.log(1 / 1e-12), rel=1e-6)
    assert np.isfinite(phi).all() and phi[2] < -60
    stacked = true_class_logit(np.stack([prob, prob[::-1]]), np.array([0, 0, 0]))
    np.testing.assert_array_equal(stacked[0], phi)
    np.testing.assert_array_equal(true_class_prob(np.stack([prob, prob]), np.array([0, 1, 2]))[1],
                                  np.array([0.8, 1e-12, 0.5], dtype=np.float32))


def test_rmia_by_hand():
    a = 0.5
    ref = np.array([[0.2, 0.6], [0.4, 0.2]])  # K = 2 references, 2 audited samples
    target = np.array([0.9, 0.3])
    pop_ref = np.array([[0.2, 0.4, 0.6], [0.2, 0.4, 0.6]])
    pop_target = np.array([0.2, 0.8, 0.3])
    # Pr(x) = 0.5 * (1.5 * mean_out + 0.5): x0 0.4, x1 0.55; z 0.4, 0.55, 0.7.
    lr_x = np.array([0.9 / 0.4, 0.3 / 0.55])          # 2.25, 0.545
    lr_z = np.array([0.2 / 0.4, 0.8 / 0.55, 0.3 / 0.7])  # 0.5, 1.4545, 0.4286
    expected = [(lr_x[i] / lr_z > 1.0).mean() for i in range(2)]
    assert expected == [1.0, 2 / 3]
    got = rmia_offline_scores(target, ref, pop_target, pop_ref, a=a)
    np.testing.assert_allclose(got, expected)
    np.testing.assert_array_equal(rmia_decision(got), [True, True])
    # gamma = 2: x1 no longer beats z0 (0.545 / 0.5 < 2) nor z2.
    np.testing.assert_allclose(rmia_offline_scores(target, ref, pop_target, pop_ref, a=a,
                                                   gamma=2.0), [2 / 3, 0.0])
    assert offline_marginal(np.array([0.3]), 1.0)[0] == pytest.approx(0.3)  # a = 1: Pr_OUT
    assert offline_marginal(np.array([0.3]), 0.0)[0] == pytest.approx(0.65)  # a = 0: Pr_IN = 1
    with pytest.raises(ValueError, match="a must"):
        offline_marginal(np.array([0.3]), 1.5)


def test_rmia_ignores_references_that_trained_on_a_population_sample():
    rng = np.random.default_rng(2)
    k, n, m = 3, 50, 40
    ref, target = rng.uniform(0.1, 0.9, (k, n)), rng.uniform(0.1, 0.9, n)
    pop_ref, pop_target = rng.uniform(0.1, 0.9, (k, m)), rng.uniform(0.1, 0.9, m)
    out = rng.random((k, m)) < 0.6
    out[:, 0] = False  # in every reference: dropped
    out[0, 1:] = True
    scores = rmia_offline_scores(target, ref, pop_target, pop_ref, pop_ref_out=out)
    garbage = np.where(out, pop_ref, rng.uniform(0.9, 1.0, (k, m)))  # IN values are ignored
    np.testing.assert_array_equal(
        scores, rmia_offline_scores(target, ref, pop_target, garbage, pop_ref_out=out))
    assert not np.array_equal(scores, rmia_offline_scores(target, ref, pop_target, pop_ref))
    with pytest.raises(ValueError, match="outside every reference"):
        rmia_offline_scores(target, ref, pop_target, pop_ref, pop_ref_out=np.zeros((k, m), bool))


def test_rmia_matches_the_analytic_auc():
    """Target p_y = Pr(x) * exp(e - 5), e ~ N(0, 1) out and N(d, 1) in: log LR(x) = e - 5.

    The score is the population's empirical CDF at LR(x), a monotone map, so the AUC is
    that of e: Phi(d / sqrt(2)), up to ties among the m population steps.
    """
    rng = np.random.default_rng(3)
    k, d, m = 4, 1.0, 5000

    def probs(count, shift):
        q = rng.uniform(0.01, 0.05, count)
        marginal = 0.5 * ((1 + DEFAULT_A) * q + (1 - DEFAULT_A))  # written out, not imported
        return np.tile(q, (k, 1)), marginal * np.exp(shift - 5.0)

    ref, target = probs(2 * N, rng.normal(size=2 * N) + d * _member())
    pop_ref, pop_target = probs(m, rng.normal(0, 1.5, m))
    assert target.max() < 1 and pop_target.max() < 1
    scores = rmia_offline_scores(target, ref, pop_target, pop_ref)
    assert roc_auc(_member(), scores) == pytest.approx(norm.cdf(d / np.sqrt(2)), abs=TOL)
    assert ((scores >= 0) & (scores <= 1)).all()


# ---- the Attack classes ---------------------------------------------------------------

def _references(rng, k, n, m, c):
    return ReferenceOutputs(
        audit_prob=rng.dirichlet(np.ones(c), (k, n)),
        population_prob=rng.dirichlet(np.ones(c), (k, m)),
        population_label=rng.integers(0, c, m),
        population_out=rng.random((k, m)) < 0.7,
        target_population_prob=rng.dirichlet(np.ones(c), m))


@pytest.fixture()
def random_outputs():
    """(reference outputs, victim features) of K = 3 references, n = 30, m = 20, C = 4."""
    rng = np.random.default_rng(4)
    k, n, m, c = 3, 30, 20, 4
    refs = _references(rng, k, n, m, c)
    target = Features(rng.dirichlet(np.ones(c), n), np.zeros((n, c)), rng.integers(0, c, n),
                      np.arange(n) < n // 2)
    return refs, target


def test_attack_classes_wrap_the_pure_functions(random_outputs):
    refs, target = random_outputs
    (_, n, c), m = refs.audit_prob.shape, len(refs.population_label)
    lira, rmia = make_attack("lira", num_classes=c), make_attack("rmia", num_classes=c)
    assert lira.learns_from == rmia.learns_from == "references"
    with pytest.raises(RuntimeError, match="fit"):
        lira.score(target)
    lira.fit(refs, AttackSpec())
    rmia.fit(refs, AttackSpec())
    score, decision = lira.score(target), lira.decide(target)
    np.testing.assert_array_equal(score, lira_offline_scores(
        true_class_logit(target.prob, target.label),
        true_class_logit(refs.audit_prob, target.label)))
    np.testing.assert_array_equal(decision, lira_decision(score))
    score, decision = rmia.score(target), rmia.decide(target)
    np.testing.assert_array_equal(score, rmia_offline_scores(
        target.true_prob, refs.audit_prob[:, np.arange(n), target.label],
        refs.target_population_prob[np.arange(m), refs.population_label],
        refs.population_prob[:, np.arange(m), refs.population_label],
        pop_ref_out=refs.population_out))
    np.testing.assert_array_equal(decision, rmia_decision(score))
    with pytest.raises(TypeError, match="saves no state"):
        rmia.state_dict()
    with pytest.raises(TypeError, match="learns from Knowledge.references"):
        rmia.fit(target, AttackSpec())
    with pytest.raises(ValueError, match="shape"):
        lira.score(target.subset(np.arange(n - 1)))
    with pytest.raises(ValueError, match="population_out"):
        ReferenceOutputs(refs.audit_prob, refs.population_prob, refs.population_label,
                         refs.population_out[:, 1:], refs.target_population_prob)


def test_the_one_fit_entry_takes_reference_outputs_and_names_what_is_missing(random_outputs):
    refs, target = random_outputs
    c = target.num_classes
    spec = AttackSpec(names=("gap", "lira", "rmia", "lira_online"))
    # Shadow features alone: every attack that needs reference outputs is named, before
    # any attack is fitted.
    with pytest.raises(ValueError, match=r"^lira, rmia learn from Knowledge.references, "
                                         r"which was not given; lira_online learns from "
                                         r"Knowledge.online_references"):
        fit_attacks(target, spec, num_classes=c)
    (fitted,) = fit_attack_sets([(Knowledge(shadow=target, references=refs), spec, c)],
                                names=[("lira", "gap", "rmia")])
    assert list(fitted) == ["lira", "gap", "rmia"]
    alone = make_attack("lira", num_classes=c)
    alone.fit(refs, spec)
    np.testing.assert_array_equal(fitted["lira"].score(target), alone.score(target))
    with pytest.raises(SpecError, match="attack='conf'"):
        fit_attack_sets([(Knowledge(shadow=target), spec, c)], names=[("conf",)])


def test_nn_sens_cls_reads_prob_sens_and_label():
    rng = np.random.default_rng(5)
    f = Features(rng.dirichlet(np.ones(3), 4), rng.random((4, 3)), [0, 1, 2, 0], [1, 0, 1, 0])
    attack = ATTACKS_REGISTRY["nn_sens_cls"](num_classes=3)
    assert attack.input_dim() == 9 and attack.build()[0].in_features == 9
    np.testing.assert_array_equal(attack.inputs(f), np.hstack([f.prob, f.sens, f.one_hot()]))
    # Only the sensitivity tells members from non-members here, and the attack finds it.
    n = 200
    member = np.arange(n) < n // 2
    prob = np.tile([0.6, 0.3, 0.1], (n, 1))
    sens = np.where(member[:, None], 0.1, 1.0) * rng.uniform(0.5, 1.0, (n, 3))
    shadow = Features(prob, sens, np.zeros(n, dtype=int), member)
    fitted = fit_attacks(shadow, AttackSpec(names=("nn_sens_cls",), epochs=10, lr=0.05,
                                            batch_size=32), num_classes=3)["nn_sens_cls"]
    assert balanced_accuracy(member, fitted.decide(shadow)) > 0.95


# ---- real tiny runs on digits -----------------------------------------------------------

FAST_FIT = TrainSpec(max_epochs=80, patience=80, batch_size=32)


@pytest.fixture(scope="module")
def digits_run():
    """fc models on disjoint 100-sample parts of digits: no early stop, so they overfit."""
    pool = load_pool(DatasetSpec())
    order = np.random.default_rng(0).permutation(len(pool.y))
    parts = {name: order[i * 100:(i + 1) * 100] for i, name in enumerate(
        ["members", "nonmembers", "dev", "other", "ref0", "ref1", "ref2", "ref3"])}
    population = order[800:1200]

    def trained(part, seed):
        model = build_model("fc", "digits", seed=seed)
        idx = parts[part]
        fit(model, (pool.x[idx], pool.y[idx]), (pool.x[parts["dev"]], pool.y[parts["dev"]]),
            FAST_FIT, seed=seed, device="cpu")
        return model

    audit = np.concatenate([parts["members"], parts["nonmembers"]])
    refs = [trained(f"ref{i}", seed=10 + i) for i in range(4)]
    ref_audit = np.stack([predict_proba(r, pool.x[audit]) for r in refs])
    ref_population = np.stack([predict_proba(r, pool.x[population]) for r in refs])

    def attack_inputs(victim):
        feats = Features(predict_proba(victim, pool.x[audit]), np.zeros((200, 10)),
                         pool.y[audit], np.arange(200) < 100)
        return feats, ReferenceOutputs(
            audit_prob=ref_audit, population_prob=ref_population,
            population_label=pool.y[population],
            population_out=np.ones((4, len(population)), dtype=bool),
            target_population_prob=predict_proba(victim, pool.x[population]))

    return {"overfit": attack_inputs(trained("members", seed=1)),
            "unseen": attack_inputs(trained("other", seed=2))}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lira", "rmia"])
def test_overfit_victim_leaks_and_an_unseen_one_does_not(digits_run, name):
    def auc(victim):
        feats, references = digits_run[victim]
        attack = make_attack(name, num_classes=10)
        attack.fit(references, AttackSpec(names=(name,)))
        return roc_auc(feats.member, attack.score(feats))

    leaky, blind = auc("overfit"), auc("unseen")
    assert leaky > 0.65
    assert blind == pytest.approx(0.5, abs=0.1)


@pytest.mark.slow
def test_evaluate_cell_scores_lira_and_rmia_and_records_epsilon(tmp_path):
    """End to end on digits: a DP-SGD victim, K = 2 reference shadows, three attacks."""
    cell = CellSpec(dataset=DatasetSpec(num_shadows=2), arch="fc", knowledge="full",
                    prune=PruneSpec("l1_unstructured", 0.5),
                    defense=DefenseSpec(name="dpsgd", strength=1.0),
                    attacks=AttackSpec(names=("top1_conf", "lira", "rmia"), epochs=1,
                                       sens_draws=2),
                    train=TrainSpec(max_epochs=3), finetune=TrainSpec(max_epochs=2))
    store = ArtifactStore(str(tmp_path / "store"))
    rows = run_cell(cell, store, ResultTables(str(tmp_path / "results")),
                    device=torch.device("cpu"))
    assert [r["attack"] for r in rows] == ["top1_conf", "lira", "rmia"]
    victim_row = store.meta("models", cell.victim().key())["row"]
    assert victim_row["epsilon"] > 0
    for r in rows:
        assert 0 <= r["auc"] <= 1 and 0 <= r["accuracy"] <= 1
        assert r["epsilon"] == victim_row["epsilon"]
    refs = reference_outputs(cell, store, device=torch.device("cpu"))
    n = len(load_pool(cell.dataset).y)
    victim = split_for(cell.dataset, "victim", 0, n)
    assert refs.num_references == 2
    assert refs.audit_prob.shape[1] == len(victim.train) + len(victim.test)
    population = np.setdiff1d(np.arange(n), np.concatenate([victim.train, victim.dev,
                                                              victim.test]))
    assert len(refs.population_label) == len(population)  # the whole shadow half
    for i in range(2):
        shadow = split_for(cell.dataset, "shadow", i, n)
        np.testing.assert_array_equal(refs.population_out[i], ~np.isin(population, shadow.train))
