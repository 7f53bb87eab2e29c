"""Pruning methods against torch.nn.utils.prune's invariants: exact sparsity, masks, zeros stay."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from mia_ray.catalog import NM_SPARSITY, PAPER_METHODS, PRUNING_METHODS
from mia_ray.errors import SpecError
from mia_ray.models import build_model
from mia_ray.pruning import (
    PRUNERS,
    Pruner,
    apportion,
    make_permanent,
    measured_sparsity,
    prune_model,
    register_pruner,
)
from mia_ray.specs import PruneSpec, TrainSpec
from mia_ray.training import fit


def pruned_params(model):
    """(module, name) of every masked tensor."""
    return [(m, k[:-5]) for m in model.modules() for k, _ in m.named_buffers(recurse=False)
            if k.endswith("_mask")]


def digits_like(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g).numpy()
    y = torch.randint(0, 10, (n,), generator=g).numpy()
    return x, y


CASES = [(m, s, "small_cnn", "digits") for m in PRUNING_METHODS for s in (0.5, 0.9)
         if NM_SPARSITY.get(m, s) == s]  # 2:4 runs at its own sparsity only
CASES += [("l1_unstructured", s, "fc", "purchase100") for s in (0.5, 0.9)]


def test_registry_matches_the_spec_names():
    # As sets: a monkeypatched delitem elsewhere (test_unknown_names) re-adds at the end.
    assert sorted(PRUNERS) == sorted(PRUNING_METHODS)
    assert all(issubclass(cls, Pruner) and cls.name == n for n, cls in PRUNERS.items())
    with pytest.raises(ValueError, match="already registered"):
        register_pruner("slimming")(type("Again", (Pruner,), {}))
    with pytest.raises(SpecError):
        measured_sparsity(nn.Linear(2, 2), "random")


@pytest.mark.parametrize("method, sparsity, arch, dataset", CASES)
def test_measured_sparsity_matches_request(method, sparsity, arch, dataset):
    model = build_model(arch, dataset, seed=0)
    prune_model(model, PruneSpec(method=method, sparsity=sparsity))
    assert measured_sparsity(model, method) == pytest.approx(sparsity, abs=0.01)
    for module, name in pruned_params(model):
        # The invariant torch's own tests check: effective tensor = original * mask.
        orig, mask = getattr(module, name + "_orig"), getattr(module, name + "_mask")
        assert torch.equal(getattr(module, name), orig * mask)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_unstructured_prunes_every_layer_by_magnitude():
    model = build_model("small_cnn", "digits", seed=0)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    before = [m.weight.detach().abs().clone() for m in layers]
    prune_model(model, PruneSpec(method="l1_unstructured", sparsity=0.5))
    for m, w in zip(layers, before):
        mask = m.weight_mask.bool()
        assert abs((~mask).float().mean().item() - 0.5) <= 1 / mask.numel()
        assert w[~mask].max() <= w[mask].min()  # nothing kept is smaller than what went
        assert not hasattr(m, "bias_mask")
    assert all(not hasattr(m, "weight_mask") for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("method, norm", [("l1_structured", 1), ("l2_structured", 2)])
def test_structured_drops_the_smallest_filters(method, norm):
    model = build_model("small_cnn", "digits", seed=0)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [torch.linalg.vector_norm(m.weight.detach().flatten(1), ord=norm, dim=1)
             for m in convs]
    prune_model(model, PruneSpec(method=method, sparsity=0.5))
    for m, n in zip(convs, norms):
        gone = ~m.weight_mask.flatten(1).any(dim=1)
        assert (m.weight_mask.flatten(1).all(dim=1) | gone).all()  # whole filters only
        assert gone.sum() == m.out_channels // 2
        assert n[gone].max() <= n[~gone].min()
    linear = model[-1]
    assert not hasattr(linear, "weight_mask")


def test_structured_also_drops_the_filter_bias():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=True), nn.Flatten(), nn.Linear(144, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 3, 3))
        model[0].bias.fill_(1.0)
    PRUNERS["l1_structured"]().apply(model, 0.5)
    assert model[0].bias.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert measured_sparsity(model, "l1_structured") == 0.5


def test_slimming_uses_one_global_threshold():
    model = build_model("small_cnn", "digits", seed=0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == [16, 32, 32]
    signs = torch.tensor([1.0, -1.0]).repeat(16)
    with torch.no_grad():
        bns[0].weight.copy_(0.01 * torch.arange(1.0, 17.0))       # 0.01 .. 0.16
        bns[1].weight.copy_(signs * (1.0 + 0.01 * torch.arange(32.0)))  # |.| 1.00 .. 1.31
        bns[2].weight.copy_(0.5 + 0.01 * torch.arange(32.0))      # 0.50 .. 0.81
    slim = copy.deepcopy(model)
    prune_model(slim, PruneSpec(method="slimming", sparsity=0.5))
    kept = [b.weight_mask.nonzero().flatten().tolist() for b in slim.modules()
            if isinstance(b, nn.BatchNorm2d)]
    # 40 of 80 go: the 15 smallest of layer 0 (its largest is kept so the net stays
    # connected), then 0.50 .. 0.74 of layer 2; layer 1 is above the threshold.
    assert kept == [[15], list(range(32)), list(range(25, 32))]
    assert measured_sparsity(slim, "slimming") == 0.5

    prune_model(model, PruneSpec(method="slimming", sparsity=0.9))  # 72 go
    kept = [b.weight_mask.nonzero().flatten().tolist() for b in bns]
    assert kept == [[15], list(range(26, 32)), [31]]  # |gamma| decides, not its sign
    for b in bns:
        assert torch.equal(b.bias_mask, b.weight_mask)
        assert torch.equal(b.weight, b.weight_orig * b.weight_mask)
    # A removed channel is silent after its BatchNorm.
    model.eval()
    with torch.no_grad():
        out = model[:3](torch.rand(4, 1, 8, 8))
    assert torch.equal(out[:, :15], torch.zeros_like(out[:, :15]))


def test_masked_weights_get_no_gradient_and_stay_zero_after_a_step():
    model = build_model("small_cnn", "digits", seed=0)
    prune_model(model, PruneSpec(method="l1_unstructured", sparsity=0.7))
    opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=5e-4)
    x, y = digits_like(16)
    loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    for module, name in pruned_params(model):
        mask = getattr(module, name + "_mask")
        assert torch.all(getattr(module, name + "_orig").grad[mask == 0] == 0)
    opt.step()
    model(torch.from_numpy(x))
    for module, name in pruned_params(model):
        assert torch.all(getattr(module, name)[getattr(module, name + "_mask") == 0] == 0)


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_fit_keeps_the_masks_and_make_permanent_keeps_the_zeros(method):
    model = build_model("small_cnn", "digits", seed=0)
    target = NM_SPARSITY.get(method, 0.7)
    prune_model(model, PruneSpec(method=method, sparsity=target))
    masks = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_mask")}
    x, y = digits_like(64)
    fit(model, (x[:48], y[:48]), (x[48:], y[48:]), TrainSpec(max_epochs=2, batch_size=16),
        seed=0, device=torch.device("cpu"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in masks.items())
    for module, name in pruned_params(model):
        assert torch.all(getattr(module, name)[getattr(module, name + "_mask") == 0] == 0)
    sparsity = measured_sparsity(model, method)
    assert sparsity == pytest.approx(target, abs=0.01)

    model.eval()
    probe = torch.from_numpy(x[:8])
    with torch.no_grad():
        before = model(probe)
    make_permanent(model)
    state = model.state_dict()
    assert not [k for k in state if k.endswith(("_orig", "_mask"))]
    assert measured_sparsity(model, method) == sparsity
    fresh = build_model("small_cnn", "digits", seed=1)
    fresh.load_state_dict(state)  # strict: exactly the keys of an unpruned model
    fresh.eval()
    assert measured_sparsity(fresh, method) == sparsity
    with torch.no_grad():
        assert torch.equal(fresh(probe), before)


def test_pruned_model_survives_pickle():
    model = build_model("small_cnn", "digits", seed=0)
    prune_model(model, PruneSpec(method="slimming", sparsity=0.5))
    clone = pickle.loads(pickle.dumps(model))
    assert measured_sparsity(clone, "slimming") == 0.5
    x = torch.rand(2, 1, 8, 8)
    model.eval()
    clone.eval()
    assert torch.equal(model(x), clone(x))


def test_sparsity_zero_adds_identity_masks():
    model = build_model("fc", "digits", seed=0)
    prune_model(model, PruneSpec(method="l1_unstructured", sparsity=0.0))
    assert measured_sparsity(model, "l1_unstructured") == 0.0
    assert all(getattr(m, n + "_mask").all() for m, n in pruned_params(model))


@pytest.mark.parametrize("method", ["l1_structured", "l2_structured", "slimming"])
def test_methods_that_cannot_apply_raise_spec_error(method):
    with pytest.raises(SpecError, match="method"):
        prune_model(build_model("fc", "purchase100", seed=0), PruneSpec(method=method))
    # Without the ``arch`` tag build_model sets, the layers themselves decide.
    bare = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(SpecError):
        PRUNERS[method]().apply(bare, 0.5)
    with pytest.raises(SpecError):
        measured_sparsity(bare, method)


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), True, "0.5"])
def test_bad_sparsity_raises_spec_error(bad):
    with pytest.raises(SpecError, match="sparsity"):
        PRUNERS["l1_unstructured"]().apply(build_model("fc", "digits", seed=0), bad)


def test_pruning_twice_is_refused():
    model = build_model("fc", "digits", seed=0)
    prune_model(model, PruneSpec(method="l1_unstructured", sparsity=0.5))
    with pytest.raises(ValueError, match="one-shot"):
        prune_model(model, PruneSpec(method="l1_unstructured", sparsity=0.5))


@pytest.mark.parametrize("sizes, sparsity", [
    ([16, 32, 32], 0.9), ([16, 32, 32], 0.5), ([1, 3, 7, 1000], 0.57), ([2, 2, 2], 0.99),
    ([5], 0.7), ([64] * 7 + [3], 0.33),
])
def test_apportion(sizes, sparsity):
    counts = apportion(sizes, sparsity)
    caps = [n - 1 for n in sizes]
    assert sum(counts) == min(round(sparsity * sum(sizes)), sum(caps))
    for k, n, cap in zip(counts, sizes, caps):
        assert 0 <= k <= cap
        if sum(counts) < sum(caps):  # no cap forced a shift: floor or ceil of the share
            assert np.floor(sparsity * n) - 1e-9 <= k <= np.ceil(sparsity * n) + 1e-9


def _target_count(model, method):
    """How many targets ``method`` has in ``model``: weights, filters or BN channels."""
    modules = PRUNERS[method]().targets(model)
    if method in ("l1_unstructured", "global_unstructured", "imp"):
        return sum(m.weight.numel() for m in modules)
    if method == "slimming":
        return sum(m.num_features for m in modules)
    return sum(m.out_channels for m in modules)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg16_bn", "densenet121"])
def test_cifar_models_prune_with_every_method(arch):
    """Every method removes exactly round(0.7 n) of its targets over each real CIFAR
    network, and the pruned network still runs. Nearly all of VGG-16-BN's seconds are
    torch.nn.utils.prune's top-k over its 15M weights, once per unstructured method:
    the real architectures are what is tested, so they stay."""
    base = build_model(arch, "cifar10", seed=0)
    x = torch.rand(2, 3, 32, 32)
    # 2:4 is not an exact count of targets (a row's tail group keeps up to 2): its own test.
    for method in [m for m in PRUNING_METHODS if m not in NM_SPARSITY]:
        model = copy.deepcopy(base)
        prune_model(model, PruneSpec(method=method, sparsity=0.7))
        n = _target_count(model, method)
        # Exactly round(0.7 n) targets go, over the whole network.
        assert measured_sparsity(model, method) == round(0.7 * n) / n
        model.eval()
        with torch.no_grad():
            assert model(x).shape == (2, 10)


def test_vgg_classifier_is_pruned_only_by_unstructured_pruning():
    base = build_model("vgg16_bn", "cifar10", seed=0)
    for method in PAPER_METHODS:
        model = copy.deepcopy(base)
        prune_model(model, PruneSpec(method=method, sparsity=0.7))
        hidden = model.classifier[0]
        zeros = float((hidden.weight == 0).float().mean())
        if method == "l1_unstructured":
            # Each layer loses its share (largest remainder), the 2M-weight hidden one too.
            assert abs(zeros - 0.7) < 1e-6
        else:
            # Filters and BN channels are conv-side targets; the linear head stays dense.
            assert zeros == 0.0 and not hasattr(hidden, "weight_mask")
