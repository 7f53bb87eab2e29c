"""The training loop's two backends: the same batch order and the same step give the same
weights, stacked or model by model (the loop is one; what differs is the arithmetic)."""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from mia_ray.defenses import PPBHook, stackable
from mia_ray.defenses.advreg import AdvRegHook
from mia_ray.defenses.dpsgd import DPSGDHook
from mia_ray.knowledge import CellSpec
from mia_ray.models import build_model
from mia_ray.planner import cohorts
from mia_ray.pruning import prune_model
from mia_ray.recipe import Row, target_recipe
from mia_ray.specs import DatasetSpec, DefenseSpec, PruneSpec, TrainSpec
from mia_ray.training import TrainingHook, fit, stacks, train

CPU = torch.device("cpu")
# Stacked kernels (bmm, grouped convolutions) round differently from one model's
# mm and convolutions; a few epochs of Adam keep that within this bound.
ATOL = 2e-5
# small_cnn adds BatchNorm over grouped convolutions: its batch statistics sum in another
# order, and Adam's normalised steps grow those 1e-7 differences in weights with tiny
# gradients to about 2e-3 within 8 epochs (1.9e-3 measured on one of the three models,
# with torch 2.14.1). The epochs, best epoch and dev accuracy must still match exactly.
CNN_ATOL = 5e-3


@pytest.fixture(scope="module")
def splits():
    """Three models' train/dev splits of digits, of unequal sizes like the paper split's."""
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    trains, devs = [], []
    for n_train, n_dev in ((300, 60), (301, 61), (301, 59)):
        idx = rng.permutation(len(y))
        trains.append((x[idx[:n_train]], y[idx[:n_train]]))
        devs.append((x[idx[n_train:n_train + n_dev]], y[idx[n_train:n_train + n_dev]]))
    return trains, devs


def _train(models, trains, devs, spec, seeds, hook=None, stack=True, force_vmap=False):
    rows = [Row(m, tr, dv, s, hook) for m, tr, dv, s in zip(models, trains, devs, seeds)]
    return train(rows, target_recipe(spec), device=CPU, stack=stack, force_vmap=force_vmap)


def _sequential(models, trains, devs, spec, seeds, hook=None):
    return _train(models, trains, devs, spec, seeds, hook, stack=False)


def fit_stacked(models, trains, devs, spec, *, seeds, device=CPU, hook=None,
                force_vmap=False):
    return _train(models, trains, devs, spec, seeds, hook, force_vmap=force_vmap)


def _assert_same(stacked_models, stacked_reports, ref_models, ref_reports, atol=ATOL):
    for a, b, ra, rb in zip(stacked_models, ref_models, stacked_reports, ref_reports):
        assert (ra.epochs_run, ra.best_epoch) == (rb.epochs_run, rb.best_epoch)
        assert ra.best_dev_acc == pytest.approx(rb.best_dev_acc, abs=1e-7)
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=0, msg=key)
        assert a.training  # fit leaves models in training mode too


@pytest.mark.parametrize(("arch", "force_vmap"), [
    ("fc", False), ("fc", True), ("small_cnn", False), ("small_cnn", True)])
def test_matches_fit_model_by_model(splits, arch, force_vmap):
    """fc has dropout (same masks per seed), small_cnn BatchNorm; patience 2 stops some early."""
    trains, devs = splits
    seeds = [11, 12, 13]
    models = [build_model(arch, "digits", seed=100 + i) for i in range(3)]
    refs = [copy.deepcopy(m) for m in models]
    spec = TrainSpec(max_epochs=8, patience=2, batch_size=64)
    reports = fit_stacked(models, trains, devs, spec, seeds=seeds, device=CPU,
                          force_vmap=force_vmap)
    _assert_same(models, reports, refs, _sequential(refs, trains, devs, spec, seeds),
                 atol=CNN_ATOL if arch == "small_cnn" else ATOL)
    path = "vmap" if force_vmap else "grouped"
    assert all(r.extra == {"stacked": 3, "stacked_path": path} for r in reports)


def test_early_stopped_model_keeps_its_best_weights_while_others_train(splits):
    """A model that cannot improve stops after patience + 1 epochs; its stack-mates run on."""
    trains, devs = splits
    # Model 0's dev labels match no class: its accuracy stays 0 after epoch 1.
    devs = [(devs[0][0], np.full_like(devs[0][1], -1)), devs[1], devs[2]]
    models = [build_model("small_cnn", "digits", seed=i) for i in range(3)]
    refs = [copy.deepcopy(m) for m in models]
    spec = TrainSpec(max_epochs=6, patience=2, batch_size=64)
    reports = fit_stacked(models, trains, devs, spec, seeds=[1, 2, 3], device=CPU)
    ref_reports = _sequential(refs, trains, devs, spec, [1, 2, 3])
    assert reports[0].epochs_run == 4 < reports[1].epochs_run
    _assert_same(models, reports, refs, ref_reports)


def test_models_with_different_step_counts(splits):
    """128 vs 130 samples: one and two batches an epoch, so Adam's step counts diverge."""
    trains, devs = splits
    trains = [(x[:n], y[:n]) for (x, y), n in zip(trains, (128, 130, 129))]
    models = [build_model("fc", "digits", seed=i) for i in range(3)]
    refs = [copy.deepcopy(m) for m in models]
    spec = TrainSpec(max_epochs=4, patience=4, batch_size=128)
    reports = fit_stacked(models, trains, devs, spec, seeds=[4, 5, 6], device=CPU)
    _assert_same(models, reports, refs, _sequential(refs, trains, devs, spec, [4, 5, 6]))


@pytest.mark.parametrize("method", ["l1_unstructured", "slimming"])
def test_pruned_fine_tuning_with_ppb(splits, method):
    """Masks stay fixed and the PPB loss is applied per model, as in fit."""
    trains, devs = splits

    def pruned(i: int) -> nn.Module:
        model = build_model("small_cnn", "digits", seed=i)
        fit(model, trains[i], devs[i], TrainSpec(max_epochs=1), seed=i, device=CPU)
        prune_model(model, PruneSpec(method, 0.5))
        return model

    # Built twice rather than deep-copied: a pruned module's weight is a non-leaf.
    models = [pruned(i) for i in range(3)]
    refs = [pruned(i) for i in range(3)]
    spec = TrainSpec(max_epochs=3, patience=3, batch_size=64)
    reports = fit_stacked(models, trains, devs, spec, seeds=[7, 8, 9], device=CPU,
                          hook=PPBHook(4.0))
    ref_reports = _sequential(refs, trains, devs, spec, [7, 8, 9], hook=PPBHook(4.0))
    _assert_same(models, reports, refs, ref_reports)
    assert reports[0].extra["ppb_strength"] == 4.0
    for model in models:
        for module in model.modules():
            if hasattr(module, "weight_mask"):
                assert torch.all(module.weight[module.weight_mask == 0] == 0)


class _Residual(nn.Module):
    """Not an nn.Sequential: only the vmap path can stack it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.bn(self.stem(x)))
        h = h + torch.relu(self.block(h))
        return self.head(self.drop(h.flatten(1)))


def test_other_architectures_take_the_vmap_path(splits):
    trains, devs = splits
    models = []
    for i in range(2):
        torch.manual_seed(i)
        models.append(_Residual())
    refs = [copy.deepcopy(m) for m in models]
    spec = TrainSpec(max_epochs=3, patience=3, batch_size=64)
    reports = fit_stacked(models, trains[:2], devs[:2], spec, seeds=[1, 2], device=CPU)
    assert reports[0].extra["stacked_path"] == "vmap"
    _assert_same(models, reports, refs, _sequential(refs, trains[:2], devs[:2], spec, [1, 2]))


def test_refuses_what_it_cannot_stack_and_trains_loop_changing_hooks_alone(splits):
    trains, devs = splits
    spec = TrainSpec(max_epochs=1)
    fc = [build_model("fc", "digits", seed=i) for i in range(2)]
    with pytest.raises(ValueError, match="one architecture"):
        fit_stacked([fc[0], build_model("small_cnn", "digits", seed=0)], trains[:2],
                    devs[:2], spec, seeds=[0, 1])

    class Prepares(TrainingHook):
        def prepare(self, model, optimizer, loader):
            return model, optimizer, loader

    reports = fit_stacked(fc, trains[:2], devs[:2], spec, seeds=[0, 1], hook=Prepares())
    assert all("stacked" not in r.extra for r in reports)  # the eager backend, one by one
    empty = (trains[0][0][:0], trains[0][1][:0])
    with pytest.raises(ValueError, match="non-empty"):
        fit_stacked(fc, [empty, trains[1]], devs[:2], spec, seeds=[0, 1])


def test_whether_a_defense_stacks_is_the_loops_rule():
    assert stacks(None) and stacks(PPBHook(4.0))
    # Only the classes matter: both change the loop, not just the loss.
    assert not stacks(DPSGDHook.__new__(DPSGDHook))
    assert not stacks(AdvRegHook.__new__(AdvRegHook))
    # The planner asks the same rule of the defense's hook class.
    assert [stackable(n) for n in ("none", "ppb", "advreg", "dpsgd")] == [
        True, True, False, False]


def test_stack_groups_puts_a_stage_together():
    data = DatasetSpec(num_shadows=3)
    full = CellSpec(dataset=data, knowledge="full", prune=PruneSpec("l1_unstructured", 0.5))
    unknown = full.with_(knowledge="defense_unknown")
    original = full.with_(knowledge="original")
    specs = [full.victim(), *full.shadows(), *unknown.shadows(), original.victim(),
             *original.shadows()]
    groups = cohorts(specs)
    # Pruned victim and shadows share a cohort (PPB off: defense_unknown's shadows are
    # the same builds, listed once); the originals are another cohort.
    assert [len(g) for g in groups] == [4, 4]
    assert groups[0][0] == full.victim() and groups[1][0] == original.victim()


def test_stack_groups_splits_a_stage_at_the_limit():
    data = DatasetSpec(num_shadows=4)
    cell = CellSpec(dataset=data, knowledge="full", prune=PruneSpec("l1_unstructured", 0.5))
    specs = [cell.victim(), *cell.shadows()]
    assert [len(g) for g in cohorts(specs, limit=2)] == [2, 2, 1]
    assert [len(g) for g in cohorts(specs, limit=1)] == [1] * 5
    assert sum(cohorts(specs, limit=2), []) == specs  # same models, same order
    with pytest.raises(ValueError, match="limit"):
        cohorts(specs, limit=0)


def test_stack_groups_keeps_unstackable_models_apart():
    # ResNet-18 would take the vmap path (measured slower); DP-SGD changes the loop.
    resnet = CellSpec(dataset=DatasetSpec(name="cifar10", num_shadows=2), arch="resnet18",
                      knowledge="full", prune=PruneSpec("l1_unstructured", 0.5))
    dpsgd = CellSpec(dataset=DatasetSpec(num_shadows=2), knowledge="full",
                     prune=PruneSpec("l1_unstructured", 0.5),
                     defense=DefenseSpec(name="dpsgd", strength=1.0))
    assert [len(g) for g in cohorts([resnet.victim(), *resnet.shadows()])] == [1, 1, 1]
    assert [len(g) for g in cohorts([dpsgd.victim(), *dpsgd.shadows()])] == [1, 1, 1]
    # ... while the DP-SGD models' unpruned parents are plain models of one cohort.
    parents = [s.parent() for s in (dpsgd.victim(), *dpsgd.shadows())]
    assert [len(g) for g in cohorts(parents)] == [3]
