"""Baseline attacks and SAMIA: values by hand, separable and identical data, the registry."""

import io

import numpy as np
import pytest
import torch

from mia_ray.attacks import (
    ATTACKS_REGISTRY,
    Attack,
    Knowledge,
    fit_attack_sets,
    fit_attacks,
    learning_from,
    make_attack,
    register_attack,
)
from mia_ray.catalog import DEFAULT_ATTACKS
from mia_ray.errors import SpecError
from mia_ray.features import Features
from mia_ray.metrics import attack_metrics, balanced_accuracy
from mia_ray.specs import AttackSpec

C = 5
# Few epochs and a large step: enough for the networks to split separable data,
# small enough to keep this file within seconds.
FAST = AttackSpec(names=DEFAULT_ATTACKS, epochs=8, lr=0.05, batch_size=32, seed=0)


def separable(n: int, seed: int) -> Features:
    """Members: confident and right, stable. Non-members: near uniform, wrong, unstable.

    Every member has the same probability profile (0.96 on its class), so a
    threshold learned on one draw separates any other draw too.
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(0, C, 2 * n)
    member = np.arange(2 * n) < n
    prob = rng.dirichlet(np.full(C, 50.0), 2 * n)
    wrong = (label + 1 + rng.integers(0, C - 1, 2 * n)) % C
    prob[~member, wrong[~member]] += 0.15
    prob /= prob.sum(axis=1, keepdims=True)
    prob[member] = 0.01
    prob[member, label[member]] = 1 - 0.01 * (C - 1)
    sens = np.where(member[:, None], rng.uniform(0, 0.1, (2 * n, C)),
                    rng.uniform(1, 2, (2 * n, C)))
    robust = np.where(member, 1.0, rng.uniform(0, 0.5, 2 * n))  # label_only's column
    return Features(prob, sens, label, member, robust=robust)


def identical(n: int, seed: int) -> Features:
    """Members and non-members drawn from one distribution: nothing to infer."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, C, 2 * n)
    prob = rng.dirichlet(np.ones(C), 2 * n)
    prob[np.arange(2 * n), label] += rng.random(2 * n)  # some confidence, some correct
    prob /= prob.sum(axis=1, keepdims=True)
    return Features(prob, rng.gamma(2.0, size=(2 * n, C)), label, np.arange(2 * n) < n)



@pytest.fixture(scope="module")
def separable_run():
    target = separable(150, seed=2)
    return fit_attacks(separable(150, seed=1), FAST, num_classes=C), target


@pytest.fixture(scope="module")
def identical_run():
    spec = AttackSpec(names=DEFAULT_ATTACKS, epochs=3, lr=0.01, batch_size=128, seed=0)
    target = identical(1500, seed=12)
    return fit_attacks(identical(1500, seed=11), spec, num_classes=C), target


def test_every_attack_a_spec_accepts_has_a_class_that_scores_under_its_name():
    from mia_ray.catalog import ATTACKS

    # A name the specs accept without a class would fail mid-sweep; a class the
    # catalog does not list could never be asked for.
    assert set(ATTACKS) == set(ATTACKS_REGISTRY) and set(DEFAULT_ATTACKS) <= set(ATTACKS)
    from mia_ray.attacks.pair import PairedFeatures

    spec = AttackSpec(names=ATTACKS, epochs=1, batch_size=16)
    # Pairs (a pruned model's features beside its original's) serve every attack; the
    # pair attacks need them.
    shadow, target = separable(40, seed=0), separable(30, seed=1)
    shadow, target = PairedFeatures.pair(shadow, shadow), PairedFeatures.pair(target, target)
    from_shadow = learning_from("shadow", ATTACKS)
    assert set(ATTACKS) - set(from_shadow) == {"lira", "rmia", "lira_online", "rmia_online",
                                               "qmia"}
    (fitted,) = fit_attack_sets([(Knowledge(shadow=shadow), spec, C)], names=[from_shadow])
    assert list(fitted) == list(from_shadow)
    for attack in fitted.values():
        n = len(target.label)
        assert attack.score(target).shape == (n,) and attack.decide(target).dtype == bool


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFAULT_ATTACKS)
def test_separable_data_is_inferred_perfectly(separable_run, name):
    attacks, target = separable_run
    attack = attacks[name]
    decision = attack.decide(target)
    assert decision.dtype == bool and decision.shape == (len(target),)
    score = attack.score(target)
    assert score.shape == (len(target),) and np.isfinite(score).all()
    assert balanced_accuracy(target.member, decision) == 1.0
    assert attack_metrics(target.member, score, decision)["auc"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFAULT_ATTACKS)
def test_identical_distributions_give_chance(identical_run, name):
    attacks, target = identical_run
    attack = attacks[name]
    out = attack_metrics(target.member, attack.score(target), attack.decide(target))
    assert out["accuracy"] == pytest.approx(0.5, abs=0.08)
    assert out["auc"] == pytest.approx(0.5, abs=0.08)


def _two_class_conf_data() -> Features:
    # class 0 separates at p_y in (0.7, 0.8], class 1 at (0.3, 0.45]; class 2 is absent.
    p_y = np.array([0.8, 0.9, 0.6, 0.7, 0.45, 0.5, 0.2, 0.3])
    label = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    prob = np.zeros((8, 3))
    prob[np.arange(8), label] = p_y
    prob[np.arange(8), 2] = 1 - p_y
    member = np.array([True, True, False, False] * 2)
    return Features(prob, np.zeros((8, 3)), label, member)


def test_per_class_thresholds_by_hand():
    shadow = _two_class_conf_data()
    conf = make_attack("conf", num_classes=3)
    conf.fit(shadow, FAST)
    # Smallest winning candidate per class; the absent class takes the global one.
    glob = conf.global_threshold
    assert glob == pytest.approx(0.45)  # 6 of 8 right is the best over all classes
    np.testing.assert_allclose(conf.thresholds, [0.8, 0.45, glob], rtol=1e-6)
    assert balanced_accuracy(shadow.member, conf.decide(shadow)) == 1.0
    np.testing.assert_allclose(conf.score(shadow), shadow.true_prob - conf.thresholds[shadow.label])

    top1 = make_attack("top1_conf", num_classes=3)
    top1.fit(shadow, FAST)
    np.testing.assert_allclose(top1.thresholds, glob)
    assert balanced_accuracy(shadow.member, top1.decide(shadow)) == 0.75

    for name in ("xent", "mentr"):
        attack = make_attack(name, num_classes=3)
        attack.fit(shadow, FAST)
        assert attack.thresholds[0] != attack.thresholds[1]
        assert attack.thresholds[2] == attack.global_threshold


def test_entropy_and_modified_entropy_values_by_hand():
    p = np.array([[0.7, 0.2, 0.1]])
    f = Features(p, np.zeros((1, 3)), [0], [True])
    xent = ATTACKS_REGISTRY["xent"](num_classes=3)
    mentr = ATTACKS_REGISTRY["mentr"](num_classes=3)
    assert xent.values(f)[0] == pytest.approx(np.sum(p * np.log(p)), rel=1e-6)
    expected = -(0.3 * np.log(0.7)) - 0.2 * np.log(0.8) - 0.1 * np.log(0.9)
    assert mentr.values(f)[0] == pytest.approx(-expected, rel=1e-6)
    # Confidently wrong is worse than uncertain for mentr, the same for plain entropy.
    wrong = Features([[0.02, 0.96, 0.02], [0.02, 0.02, 0.96]], np.zeros((2, 3)), [0, 2],
                     [True, True])
    assert mentr.values(wrong)[0] < mentr.values(wrong)[1]
    assert xent.values(wrong)[0] == pytest.approx(xent.values(wrong)[1])


def test_gap_attack_by_hand():
    f = Features([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]], np.zeros((3, 2)), [0, 0, 1],
                 [True, False, False])
    gap = make_attack("gap", num_classes=2)
    gap.fit(f, FAST)
    np.testing.assert_array_equal(gap.score(f), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(gap.decide(f), [True, False, False])


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFAULT_ATTACKS)
def test_state_dict_round_trip_reproduces_scores(separable_run, name):
    attacks, target = separable_run
    buffer = io.BytesIO()
    np.savez(buffer, **attacks[name].state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as arrays:
        state = dict(arrays)
    restored = make_attack(name, num_classes=C)
    restored.load_state_dict(state, spec=FAST)
    np.testing.assert_array_equal(restored.score(target), attacks[name].score(target))
    np.testing.assert_array_equal(restored.decide(target), attacks[name].decide(target))


def test_learned_fit_is_seeded_and_leaves_global_rng_alone():
    shadow = separable(40, seed=3)
    spec = AttackSpec(names=("nn",), epochs=2, batch_size=16, seed=4)
    before = torch.get_rng_state()
    first, second = make_attack("nn", num_classes=C), make_attack("nn", num_classes=C)
    first.fit(shadow, spec)
    second.fit(shadow, spec)
    assert torch.equal(torch.get_rng_state(), before)
    for key, value in first.state_dict().items():
        np.testing.assert_array_equal(value, second.state_dict()[key])
    other = make_attack("nn", num_classes=C)
    other.fit(shadow, AttackSpec(names=("nn",), epochs=2, batch_size=16, seed=5))
    assert not np.array_equal(other.state_dict()["module.0.weight"],
                              first.state_dict()["module.0.weight"])


@pytest.mark.parametrize("net", ["mlp", "samia"])
def test_fresh_attack_networks_have_xavier_weights_and_zero_biases(net):
    from torch import nn

    from mia_ray.attacks.learned import SAMIANet, mlp

    torch.manual_seed(0)
    module = mlp(3 * 100) if net == "mlp" else SAMIANet(100)
    linears = [m for m in module.modules() if type(m) is nn.Linear]
    # SAMIA: embedding, two in the head, two feed-forward layers in each of 3 encoder layers.
    assert len(linears) == (4 if net == "mlp" else 1 + 2 + 2 * 3)
    for layer in linears:
        assert torch.count_nonzero(layer.bias) == 0
        # Xavier-normal: std = sqrt(2 / (fan_in + fan_out)); PyTorch's default (Kaiming
        # uniform, a = sqrt 5) gives 1 / sqrt(3 fan_in), 0.4x-0.7x of it for these shapes.
        want = (2.0 / (layer.in_features + layer.out_features)) ** 0.5
        if layer.weight.numel() >= 1000:  # enough draws for a tight estimate
            assert 0.95 < layer.weight.std().item() / want < 1.05


def test_make_attack_unknown_name_lists_known():
    with pytest.raises(SpecError) as info:
        make_attack("nope", num_classes=C)
    assert "nope" in str(info.value) and "'samia'" in str(info.value)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        @register_attack("conf")
        class Again(Attack):
            pass
    assert ATTACKS_REGISTRY["conf"].__name__ == "ConfidenceAttack"


def test_fit_keeps_the_names_order_and_refuses_reference_attacks_without_their_outputs():
    shadow = separable(20, seed=0)
    spec = AttackSpec(names=("gap", "lira", "conf", "rmia"), epochs=1)
    (fitted,) = fit_attack_sets([(Knowledge(shadow=shadow), spec, C)],
                                names=[learning_from("shadow", spec.names)])
    assert list(fitted) == ["gap", "conf"]
    # Before the one lifecycle, fit_attacks skipped lira and rmia without a word.
    with pytest.raises(ValueError, match="lira, rmia learn from Knowledge.references"):
        fit_attacks(shadow, spec, num_classes=C)


def test_misuse_raises_clear_errors():
    with pytest.raises(RuntimeError, match="fit"):
        make_attack("conf", num_classes=C).score(separable(5, seed=0))
    with pytest.raises(RuntimeError, match="fit"):
        make_attack("samia", num_classes=C).decide(separable(5, seed=0))
    with pytest.raises(ValueError, match="classes"):
        make_attack("conf", num_classes=3).fit(separable(5, seed=0), FAST)
    with pytest.raises(ValueError, match="num_classes"):
        make_attack("nn", num_classes=1)
