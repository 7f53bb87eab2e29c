"""A default is written once, in the spec field that owns it, and every command reads it:
change the field's default and the cell's and the audit's parsed options and specs follow."""

from __future__ import annotations

import dataclasses

import pytest

from mia_ray.audit.cli import parse_args as audit_args
from mia_ray.cell import build_cell
from mia_ray.cell import parse_args as cell_args
from mia_ray.keys import spec_default
from mia_ray.specs import AttackSpec, DatasetSpec, TrainSpec

AUDIT = ["--model", "m.pt", "--data", "digits", "--members", "m.npy"]


@pytest.mark.parametrize("spec, field, option, changed", [
    (AttackSpec, "epochs", "attack_epochs", 37),
    (AttackSpec, "label_queries", "label_queries", 9),
    (TrainSpec, "patience", "patience", 11),
    (DatasetSpec, "num_shadows", "shadows", 3),
])
def test_every_command_follows_a_changed_spec_default(monkeypatch, spec, field, option, changed):
    default = spec.__dataclass_fields__[field]
    assert spec_default(spec, field) == default.default != changed
    monkeypatch.setattr(default, "default", changed)
    assert getattr(cell_args([]), option) == changed
    if option != "shadows":  # the audit's K is its own documented choice (docs/audit.md)
        assert getattr(audit_args(AUDIT), option) == changed


def test_the_cell_spec_carries_the_spec_defaults():
    cell = build_cell(cell_args([]))
    assert cell.attacks.epochs == AttackSpec().epochs
    assert cell.dataset.num_shadows == DatasetSpec().num_shadows
    assert cell.train.patience == TrainSpec().patience
    assert dataclasses.replace(cell).key() == cell.key()
