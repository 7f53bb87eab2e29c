"""Every registry refuses a name it does not hold with SpecError, naming what it holds.

Specs already refuse unknown names when they are built; these are the lookups behind
them (a name the spec knows but no module registered, or a direct caller).
"""

from __future__ import annotations

import pytest
import torch

from mia_ray.attacks import ATTACKS_REGISTRY, fit_attacks, make_attack
from mia_ray.data import expected_files
from mia_ray.defenses import HOOK_FACTORIES, make_hook
from mia_ray.errors import SpecError
from mia_ray.features import Features
from mia_ray.models import build_model
from mia_ray.pruning import PRUNERS, measured_sparsity, prune_model
from mia_ray.specs import AttackSpec, DefenseSpec, PruneSpec


def _refused(field: str, value: str, listed: str, call) -> None:
    with pytest.raises(SpecError) as info:
        call()
    assert info.value.field == field and info.value.value == value
    assert listed in str(info.value)


def test_defense_without_a_hook(monkeypatch):
    monkeypatch.delitem(HOOK_FACTORIES, "dpsgd")
    _refused("defense", "dpsgd", "'ppb'",
             lambda: make_hook(DefenseSpec(name="dpsgd", strength=1.0)))


def test_dataset_without_a_loader():
    _refused("dataset", "mnist", "'digits'", lambda: expected_files("mnist", "/data"))


def test_pruning_method_without_a_pruner(monkeypatch):
    monkeypatch.delitem(PRUNERS, "slimming")
    model = build_model("small_cnn", "digits", seed=0)
    _refused("method", "slimming", "'l1_unstructured'",
             lambda: prune_model(model, PruneSpec("slimming", 0.5)))
    _refused("method", "slimming", "'l1_unstructured'",
             lambda: measured_sparsity(model, "slimming"))


def test_attack_without_a_class(monkeypatch):
    _refused("attack", "telepathy", "'conf'", lambda: make_attack("telepathy", num_classes=3))
    monkeypatch.delitem(ATTACKS_REGISTRY, "gap")
    shadow = Features(torch.full((4, 3), 1 / 3).numpy(), torch.zeros(4, 3).numpy(),
                      torch.tensor([0, 1, 2, 0]).numpy(),
                      torch.tensor([True, False, True, False]).numpy())
    # Before this change fit_attacks skipped the name and the cell lost a result row.
    _refused("attack", "gap", "'conf'",
             lambda: fit_attacks(shadow, AttackSpec(names=("conf", "gap")), num_classes=3))


def test_architecture_without_a_builder():
    _refused("arch", "alexnet", "'small_cnn'", lambda: build_model("alexnet", "digits", seed=0))
