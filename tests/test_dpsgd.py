"""DP-SGD fine-tuning: the accountant's epsilon, masks and frozen BatchNorm kept, less leakage."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.validators import ModuleValidator
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from mia_ray import cell
from mia_ray.data import load_pool, split_for
from mia_ray.defenses import DPSGDHook, make_hook
from mia_ray.defenses.dpsgd import bake_masks, freeze_batchnorm
from mia_ray.metrics import roc_auc
from mia_ray.models import build_model
from mia_ray.pipeline import _restore, train_model
from mia_ray.predict import predict_proba
from mia_ray.pruning import make_permanent, measured_sparsity, prune_model
from mia_ray.specs import DatasetSpec, DefenseSpec, ModelSpec, PruneSpec, TrainSpec
from mia_ray.training import fit

# Opacus's per-sample hooks on a first layer whose input needs no gradient; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

CPU = torch.device("cpu")



def random_digits(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g).numpy()
    y = torch.randint(0, 10, (n,), generator=g).numpy().astype(np.int64)
    return x, y


def pruned(arch, method="l1_unstructured", sparsity=0.6, seed=0):
    model = build_model(arch, "digits", seed=seed)
    model.eval()  # as pipeline._restore hands over the parent
    prune_model(model, PruneSpec(method, sparsity))
    return model


def replayed_epsilon(sigma, sample_rate, steps, delta):
    """The RDP accountant's epsilon, recomputed from its formula rather than read back."""
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=steps, orders=orders)
    return get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0]


def test_registered_factory_reads_the_spec():
    spec = DefenseSpec(name="dpsgd", strength=2.5, clip_norm=0.7, delta=1e-6)
    hook = make_hook(spec, train=None, dev=None, num_classes=10, seed=0)
    assert isinstance(hook, DPSGDHook)
    assert (hook.noise_multiplier, hook.max_grad_norm, hook.delta) == (2.5, 0.7, 1e-6)
    with pytest.raises(ValueError, match="noise_multiplier"):
        DPSGDHook(noise_multiplier=0.0, max_grad_norm=1.0, delta=1e-5)


def test_recorded_epsilon_equals_the_accountant():
    x, y = random_digits(90, seed=0)
    hook = DPSGDHook(noise_multiplier=1.3, max_grad_norm=1.0, delta=1e-5)
    spec = TrainSpec(max_epochs=4, patience=10, batch_size=16)
    report = fit(pruned("fc"), (x[:70], y[:70]), (x[70:], y[70:]), spec, seed=0, device=CPU,
                 hook=hook)
    batches = math.ceil(70 / 16)
    steps = report.epochs_run * batches
    assert report.extra["dp_steps"] == steps == 20
    assert report.extra["sample_rate"] == pytest.approx(1 / batches)
    assert report.extra["epsilon"] == pytest.approx(
        replayed_epsilon(1.3, 1 / batches, steps, 1e-5), rel=1e-12)
    assert report.extra["epsilon"] == hook.engine.get_epsilon(1e-5)
    assert hook.engine.accountant.history == [(1.3, 1 / batches, steps)]


def test_masked_weights_stay_zero_and_batchnorm_stays_the_parents():
    x, y = random_digits(64, seed=1)
    model = pruned("small_cnn", sparsity=0.6)
    masks = {name: buf.clone() for name, buf in model.named_buffers() if name.endswith("_mask")}
    bn_before = {k: v.clone() for k, v in model.state_dict().items()
                 if "running" in k or k.startswith(("1.", "5.", "8."))}  # the BatchNorm layers
    orig_before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_orig")}
    report = fit(model, (x[:48], y[:48]), (x[48:], y[48:]),
                 TrainSpec(max_epochs=3, patience=10, batch_size=16), seed=0, device=CPU,
                 hook=DPSGDHook(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5))
    assert report.extra["dp_steps"] == 9
    state = model.state_dict()
    for name, mask in masks.items():
        weight = state[name.replace("_mask", "")]
        assert torch.all(weight[mask == 0] == 0), name
        changed = weight[mask == 1] != orig_before[name.replace("_mask", "_orig")][mask == 1]
        assert changed.any(), name  # the live weights did train
    for key, value in bn_before.items():
        assert torch.equal(state[key], value), key
    assert measured_sparsity(model, "l1_unstructured") == pytest.approx(0.6, abs=1e-3)
    # A plain module again: no masks, Opacus hooks or per-sample buffers left behind.
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   for m in model.modules())
    fresh = build_model("small_cnn", "digits", seed=5)
    fresh.load_state_dict(state)  # strict: the same keys and shapes as build_model's


def test_masked_gradients_and_adam_moments_stay_zero():
    """Noise lands on every coordinate; the hook zeroes it on masked ones before Adam."""
    x, y = random_digits(32, seed=2)
    model = pruned("fc", sparsity=0.5)
    model.train()
    layer = model[1]
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    hook = DPSGDHook(noise_multiplier=5.0, max_grad_norm=1.0, delta=1e-5)
    net, dp_optimizer, dp_loader = hook.prepare(model, optimizer, loader)
    mask = dict((id(p), m) for p, m in hook.masks)[id(layer.weight)]
    seen = []
    dp_optimizer.original_optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append((layer.weight.grad.clone(),
                                               layer.weight.grad_sample.clone())))
    for xb, yb in dp_loader:
        dp_optimizer.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        dp_optimizer.step()
    assert seen
    for grad, per_sample in seen:
        # Clipped without the masked entries, and the noise on them removed.
        assert torch.all(per_sample[:, mask == 0] == 0) and per_sample.abs().sum() > 0
        assert torch.all(grad[mask == 0] == 0) and grad[mask == 1].abs().sum() > 0
    moments = dp_optimizer.original_optimizer.state[layer.weight]
    assert torch.all(moments["exp_avg"][mask == 0] == 0)
    assert torch.all(moments["exp_avg_sq"][mask == 0] == 0)
    assert torch.all(layer.weight[mask == 0] == 0)


def test_frozen_batchnorm_passes_opacus_validation_and_ignores_train():
    model = build_model("small_cnn", "digits", seed=0)
    model.train()
    assert not ModuleValidator.is_valid(model)  # trainable BatchNorm: Opacus refuses
    handles = freeze_batchnorm(model)
    assert len(handles) == 3 and ModuleValidator.validate(model, strict=True) == []
    model.train()
    bn = model[1]
    before = bn.running_mean.clone()
    model(torch.randn(8, 1, 8, 8) + 3.0)
    assert torch.equal(bn.running_mean, before) and not bn.training


def test_bake_masks_keeps_the_parameter_objects():
    model = pruned("fc", sparsity=0.5)
    orig = model[1].weight_orig
    optimizer = torch.optim.Adam(model.parameters())
    pairs = bake_masks(model)
    assert len(pairs) == 3 and pairs[0][0] is orig
    assert not prune.is_pruned(model)
    assert set(map(id, model.parameters())) == {id(p) for g in optimizer.param_groups
                                                for p in g["params"]}


def test_dp_training_is_reproducible():
    x, y = random_digits(60, seed=3)

    def run():
        model = pruned("fc", seed=1)
        fit(model, (x[:48], y[:48]), (x[48:], y[48:]), TrainSpec(max_epochs=2, batch_size=16),
            seed=7, device=CPU,
            hook=DPSGDHook(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5))
        return model.state_dict()

    first, second = run(), run()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_train_model_records_epsilon_and_the_model_restores():
    spec = ModelSpec(dataset=DatasetSpec(), arch="small_cnn", train=TrainSpec(max_epochs=2),
                     prune=PruneSpec("slimming", 0.5),
                     defense=DefenseSpec(name="dpsgd", strength=2.0, clip_norm=1.0),
                     finetune=TrainSpec(max_epochs=2, patience=5))
    parent, _ = train_model(spec.parent(), device=CPU)
    model, row = train_model(spec, parent.state_dict(), device=CPU)
    n_train = len(split_for(spec.dataset, "victim", 0, len(load_pool(spec.dataset).y)).train)
    batches = math.ceil(n_train / 128)
    assert row["epsilon"] == pytest.approx(
        replayed_epsilon(2.0, 1 / batches, row["epochs"] * batches, 1e-5), rel=1e-12)
    assert row["measured_sparsity"] == pytest.approx(0.5, abs=0.01)
    restored = _restore(spec, model.state_dict())
    probe = load_pool(spec.dataset).x[:20].copy()
    np.testing.assert_allclose(predict_proba(restored, probe), predict_proba(model, probe),
                               atol=1e-6)


@pytest.mark.slow
def test_dpsgd_at_large_sigma_lowers_leakage_on_digits():
    """A pruned small_cnn re-fine-tuned on its members: plain fine-tuning leaks, sigma 5 less."""
    pool = load_pool(DatasetSpec())
    order = np.random.default_rng(0).permutation(len(pool.y))
    members, dev, nonmembers = order[:300], order[300:400], order[400:700]
    train, dev_set = (pool.x[members], pool.y[members]), (pool.x[dev], pool.y[dev])
    parent = build_model("small_cnn", "digits", seed=1)
    fit(parent, train, dev_set, TrainSpec(max_epochs=60, patience=60, batch_size=32), seed=0,
        device=CPU)
    audit = np.concatenate([members, nonmembers])
    is_member = np.arange(600) < 300

    def finetuned_auc(hook):
        model = build_model("small_cnn", "digits", seed=0)
        model.load_state_dict(parent.state_dict())
        model.eval()
        prune_model(model, PruneSpec("l1_unstructured", 0.8))
        fit(model, train, dev_set, TrainSpec(max_epochs=30, patience=30, batch_size=32),
            seed=0, device=CPU, hook=hook)
        make_permanent(model)
        p_y = predict_proba(model, pool.x[audit])[np.arange(600), pool.y[audit]]
        return roc_auc(is_member, p_y)  # the global-threshold confidence attack's AUC

    plain = finetuned_auc(None)
    private = finetuned_auc(DPSGDHook(noise_multiplier=5.0, max_grad_norm=1.0, delta=1e-5))
    print(f"confidence-attack AUC: plain fine-tuning {plain:.3f}, DP-SGD sigma 5 {private:.3f}")
    assert plain > 0.57
    assert private < plain - 0.03
    assert abs(private - 0.5) < abs(plain - 0.5)


@pytest.mark.parametrize("argv, field", [
    (["--defense", "dpsgd", "--strength", "0"], "strength"),
    (["--defense", "dpsgd", "--strength", "1", "--clip-norm", "0"], "clip_norm"),
    (["--defense", "dp-sgd", "--strength", "1"], "defense"),
])
def test_cli_refuses_bad_dpsgd_settings(tmp_path, capsys, argv, field):
    code = cell.main(argv + ["--store", str(tmp_path / "s"), "--results", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{field}=" in err
    assert not (tmp_path / "s").exists()  # refused before any work
