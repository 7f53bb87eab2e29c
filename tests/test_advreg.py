"""AdvReg: the alternating inference/classifier steps, its loss, and its data, checked by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from mia_ray.defenses import AdvRegHook, make_hook
from mia_ray.metrics import roc_auc
from mia_ray.models import build_model
from mia_ray.pruning import prune_model
from mia_ray.specs import DefenseSpec, PruneSpec, TrainSpec
from mia_ray.training import fit

CPU = torch.device("cpu")



def random_digits(n, seed, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, 1, 8, 8, generator=g) + offset).numpy()
    y = torch.randint(0, 10, (n,), generator=g).numpy().astype(np.int64)
    return x, y


def advreg(theta=1.0, k=1, train=None, dev=None, seed=0):
    spec = DefenseSpec(name="advreg", strength=theta, advreg_steps=k)
    return make_hook(spec, train=train if train is not None else random_digits(40, 0),
                     dev=dev if dev is not None else random_digits(20, 1), num_classes=10,
                     seed=seed, train_spec=TrainSpec())


@pytest.mark.parametrize("k", [1, 3])
def test_k_inference_steps_then_one_classifier_step_per_batch(k):
    """Every optimizer step in the process is logged, in order, by torch's global hook."""
    train, dev = random_digits(50, seed=2), random_digits(20, seed=3)
    hook = advreg(theta=2.0, k=k, train=train, dev=dev)
    log = []
    handle = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: log.append("h" if opt is hook.attacker_optimizer else "f"))
    try:
        report = fit(pruned_fc(), train, dev, TrainSpec(max_epochs=3, patience=10, batch_size=16),
                     seed=0, device=CPU, hook=hook)
    finally:
        handle.remove()
    batches = math.ceil(50 / 16)  # 4 mini-batches per epoch
    assert report.epochs_run == 3
    assert log == (["h"] * k + ["f"]) * (batches * 3)
    per_epoch = len(log) // 3
    assert per_epoch == batches * (k + 1)
    assert hook.classifier_steps == batches * 3 and hook.inference_steps == k * batches * 3
    assert report.extra == {"advreg_strength": 2.0, "advreg_steps": k,
                            "advreg_inference_steps": k * batches * 3,
                            "advreg_classifier_steps": batches * 3}


def pruned_fc(seed=0):
    model = build_model("fc", "digits", seed=seed)
    prune_model(model, PruneSpec("l1_unstructured", 0.5))
    return model


def test_loss_is_cross_entropy_plus_theta_times_the_membership_gain():
    hook = advreg(theta=3.0)
    logits, y = torch.randn(6, 10, requires_grad=True), torch.randint(0, 10, (6,))
    inputs = torch.cat([torch.softmax(logits, 1), F.one_hot(y, 10).float()], dim=1)
    gain = F.logsigmoid(hook.attacker(inputs)).mean()
    expected = F.cross_entropy(logits, y) + 3.0 * gain
    loss = hook.loss(logits, y, None)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    # h is held fixed in the classifier step: no gradient reaches it.
    assert all(p.grad is None for p in hook.attacker.parameters())
    assert all(p.requires_grad for p in hook.attacker.parameters())


class Recorder(nn.Module):
    """A classifier that remembers every input it is queried on."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def test_inference_steps_use_train_members_and_dev_nonmembers_only():
    train, dev = random_digits(30, seed=4, offset=10.0), random_digits(12, seed=5, offset=-10.0)
    hook = advreg(theta=1.0, k=2, train=train, dev=dev)
    model = Recorder()
    hook.prepare(model, torch.optim.Adam(model.parameters()), loader=None)
    hook.before_step(model, torch.zeros(16, 1, 8, 8), torch.zeros(16, dtype=torch.long))
    assert len(model.seen) == 4  # two steps, each one member and one non-member batch
    rows = {tuple(r.flatten().tolist()) for r in torch.from_numpy(train[0])}
    dev_rows = {tuple(r.flatten().tolist()) for r in torch.from_numpy(dev[0])}
    for i, batch in enumerate(model.seen):
        pool = rows if i % 2 == 0 else dev_rows
        assert len(batch) == 16
        assert all(tuple(r.flatten().tolist()) in pool for r in batch)
    assert not model.training  # queried in eval mode; fit switches back


@pytest.mark.slow
def test_inference_model_learns_to_separate():
    """With the classifier fixed and members far from non-members, h's gain rises."""
    train, dev = random_digits(64, seed=6), random_digits(64, seed=7)
    hook = advreg(theta=1.0, k=1, train=train, dev=dev)
    model = build_model("fc", "digits", seed=0)
    # A classifier that memorised its members' random labels (early-stopped on them too).
    fit(model, train, train, TrainSpec(max_epochs=100, patience=100, batch_size=64), seed=0,
        device=CPU)
    hook.prepare(model, torch.optim.Adam(model.parameters()), loader=None)

    def gain():
        with torch.no_grad():
            p_in = torch.softmax(model.eval()(torch.from_numpy(train[0])), 1)
            p_out = torch.softmax(model(torch.from_numpy(dev[0])), 1)
            h_in = hook.attacker(hook._attack_inputs(p_in, torch.from_numpy(train[1])))
            h_out = hook.attacker(hook._attack_inputs(p_out, torch.from_numpy(dev[1])))
        member = np.r_[np.ones(64, bool), np.zeros(64, bool)]
        auc = roc_auc(member, torch.cat([h_in, h_out]).squeeze(1).numpy())
        return (F.logsigmoid(h_in).mean() + F.logsigmoid(-h_out).mean()).item(), auc

    before, _ = gain()
    assert before == pytest.approx(-2 * math.log(2), abs=0.05)  # h starts near chance
    for _ in range(150):
        hook.before_step(model, torch.zeros(32, 1, 8, 8), torch.zeros(32, dtype=torch.long))
    after, auc = gain()
    assert after > before + 0.15 and auc > 0.8


def test_factory_needs_dev_and_is_seeded():
    with pytest.raises(ValueError, match="dev"):
        make_hook(DefenseSpec(name="advreg", strength=1.0), train=random_digits(8, 0),
                  dev=None, num_classes=10, seed=0)
    assert make_hook(DefenseSpec(name="advreg", strength=0.0)) is None  # plain fine-tuning
    a, b, c = advreg(seed=1), advreg(seed=1), advreg(seed=2)
    assert isinstance(a, AdvRegHook)
    wa, wb, wc = (h.attacker[0].weight for h in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_fit_with_advreg_is_reproducible():
    train, dev = random_digits(40, seed=8), random_digits(16, seed=9)

    def run():
        model = pruned_fc(seed=3)
        fit(model, train, dev, TrainSpec(max_epochs=2, batch_size=16), seed=4, device=CPU,
            hook=advreg(theta=1.0, k=2, train=train, dev=dev, seed=4))
        return model.state_dict()

    first, second = run(), run()
    assert all(torch.equal(first[k], second[k]) for k in first)
