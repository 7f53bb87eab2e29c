"""PPB: the loss against the formula written out by hand, its hook and its registration."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mia_ray.catalog import DEFENSES
from mia_ray.defenses import HOOK_FACTORIES, PPBHook, make_hook, ppb_loss, register_defense
from mia_ray.models import build_model
from mia_ray.specs import DefenseSpec, TrainSpec
from mia_ray.training import TrainingHook, fit

LOGITS = [[1.0, 3.0, 0.0],
          [2.0, 2.0, -1.0],
          [0.5, -0.5, 4.0],
          [0.0, 1.0, 1.0]]
LABELS = [1, 0, 2, 2]


def by_hand(strength):
    """The PPB loss of LOGITS written out with plain Python arithmetic."""
    def softmax(row):
        exps = [math.exp(v) for v in row]
        return [e / sum(exps) for e in exps]

    ce = sum(-math.log(softmax(row)[c]) for row, c in zip(LOGITS, LABELS)) / len(LOGITS)
    ranked = [sorted(row, reverse=True) for row in LOGITS]
    # Pair sample i of the first half with sample i + 2 of the second.
    kls = []
    for first, second in [(ranked[0], ranked[2]), (ranked[1], ranked[3])]:
        p, q = softmax(second), softmax(first)
        kls.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
    return ce + strength * sum(kls) / len(kls)


@pytest.mark.parametrize("strength", [0.5, 4.0])
def test_matches_the_formula_by_hand(strength):
    got = ppb_loss(torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(LABELS), strength)
    assert got.item() == pytest.approx(by_hand(strength), rel=1e-12)
    assert by_hand(strength) > by_hand(0.0)  # the halves do differ: the KL term is live


def test_strength_zero_is_cross_entropy_exactly():
    logits, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    assert torch.equal(ppb_loss(logits, y, 0.0), F.cross_entropy(logits, y))


def test_odd_batch_leaves_the_last_sample_to_cross_entropy_only():
    logits = torch.tensor(LOGITS + [[9.0, -9.0, 0.0]], dtype=torch.float64)
    y = torch.tensor(LABELS + [0])
    even = ppb_loss(logits[:4], y[:4], 2.0) - F.cross_entropy(logits[:4], y[:4])
    odd = ppb_loss(logits, y, 2.0) - F.cross_entropy(logits, y)
    assert odd.item() == pytest.approx(even.item(), rel=1e-12)
    single = ppb_loss(logits[:1], y[:1], 2.0)
    assert torch.equal(single, F.cross_entropy(logits[:1], y[:1]))


def test_gradients_reach_both_halves():
    logits = torch.tensor(LOGITS, requires_grad=True)
    y = torch.tensor(LABELS)
    kl_only = ppb_loss(logits, y, 1.0) - F.cross_entropy(logits, y)
    kl_only.backward()
    per_sample = logits.grad.abs().sum(dim=1)
    assert (per_sample > 0).all()


def test_invariant_to_class_order():
    """Sorting makes the KL term compare confidence profiles, not predicted classes."""
    logits, y = torch.tensor(LOGITS), torch.tensor(LABELS)
    perm = torch.tensor([2, 0, 1])
    kl = ppb_loss(logits, y, 1.0) - F.cross_entropy(logits, y)
    kl_perm = ppb_loss(logits[:, perm], y, 1.0) - F.cross_entropy(logits[:, perm], y)
    assert kl.item() == pytest.approx(kl_perm.item(), abs=1e-6)


def test_make_hook():
    assert make_hook(DefenseSpec()) is None
    assert make_hook(DefenseSpec(name="ppb", strength=0.0)) is None  # plain fine-tuning
    hook = make_hook(DefenseSpec(name="ppb", strength=4.0), train=None, seed=3)
    assert isinstance(hook, PPBHook) and isinstance(hook, TrainingHook)
    assert hook.strength == 4.0
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    assert torch.equal(hook.loss(logits, y, None), ppb_loss(logits, y, 4.0))
    assert "ppb" in HOOK_FACTORIES and set(HOOK_FACTORIES) <= set(DEFENSES) - {"none"}
    with pytest.raises(ValueError, match="already registered"):
        register_defense("ppb", lambda defense, **context: PPBHook(1.0))


def test_fit_with_ppb_runs_and_records_strength():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=g).numpy()
    y = torch.randint(0, 10, (40,), generator=g).numpy().astype(np.int64)
    report = fit(build_model("fc", "digits", seed=0), (x[:32], y[:32]), (x[32:], y[32:]),
                 TrainSpec(max_epochs=2, batch_size=8), seed=0, device=torch.device("cpu"),
                 hook=make_hook(DefenseSpec(name="ppb", strength=4.0)))
    assert report.extra == {"ppb_strength": 4.0}
