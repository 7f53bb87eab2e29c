"""A default is written once, in the spec field (or rule) that owns it, and every command
reads it: change it and the cell's, the audit's and the sweeps' specs and --help follow,
except where a command says by name that it deliberately differs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.claims import MAX_TEST_ACC_DROP
from mia_ray.audit.cli import AUDIT_SHADOWS
from mia_ray.audit.cli import parse_args as audit_args
from mia_ray.audit.compare import MAX_ACCURACY_DROP
from mia_ray.catalog import IMP_ROUNDS, PAPER_ATTACK_EPOCHS
from mia_ray.cell import build_cell
from mia_ray.cell import parse_args as cell_args
from mia_ray.grid import GridSpec
from mia_ray.info import AUTHORS_EPOCHS
from mia_ray.keys import spec_default
from mia_ray.knowledge import CellSpec
from mia_ray.specs import (
    DEFAULT_FINETUNE,
    AttackSpec,
    DatasetSpec,
    DefenseSpec,
    ModelSpec,
    TrainSpec,
)

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "defaults_probe.py"
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
    if option != "shadows":  # the audit's K is its own, named choice (AUDIT_SHADOWS)
        assert getattr(audit_args(AUDIT), option) == changed


def test_the_cell_spec_carries_the_spec_defaults():
    cell = build_cell(cell_args([]))
    assert cell.attacks.epochs == AttackSpec().epochs
    assert cell.dataset.num_shadows == DatasetSpec().num_shadows
    assert cell.train.patience == TrainSpec().patience
    assert dataclasses.replace(cell).key() == cell.key()


def test_the_fine_tune_rule_is_half_rounded_down_and_at_least_one():
    assert [TrainSpec(max_epochs=n).finetune_budget().max_epochs
            for n in (1, 2, 3, 7, 50, 100)] == [1, 1, 1, 3, 25, 50]
    assert TrainSpec(patience=9).finetune_budget() == TrainSpec(max_epochs=50, patience=9)
    for spec in (ModelSpec, CellSpec, GridSpec):
        assert spec_default(spec, "finetune") == DEFAULT_FINETUNE == TrainSpec(max_epochs=50)


def test_specs_built_with_defaults_keep_their_stored_keys():
    """Results are stored under these keys: reading a default from its one place must
    not move them (the values were taken before the defaults were moved)."""
    grid = GridSpec()
    assert grid.key() == "0606a799d64a19bb"
    assert len(grid.cells()) == 169
    assert build_cell(cell_args([])).key() == CellSpec().key() == "335081566702cc62"
    assert ModelSpec(DatasetSpec(), "small_cnn").key() == "74c9248ff641f6e4"
    cell = build_cell(cell_args(["--dataset", "mnist1d"]))
    assert (cell.train.max_epochs, cell.finetune.max_epochs) == (50, 25)
    assert cell.key() == "c0eb3c07e78166fa"
    assert build_cell(cell_args(["--epochs", "7"])).key() == "762b8cbfbd4e0db8"
    assert build_cell(cell_args(["--epochs", "1"])).finetune.max_epochs == 1


# The source edits of one default each: K, attack epochs, the training budget, the rule.
EDITS = [
    ("mia_ray/specs.py", "    num_shadows: int = 5\n", "    num_shadows: int = 3\n"),
    ("mia_ray/specs.py", "    epochs: int = PAPER_ATTACK_EPOCHS\n", "    epochs: int = 37\n"),
    ("mia_ray/specs.py", '    max_epochs: int = AUTHORS_EPOCHS["image"]\n',
     "    max_epochs: int = 60\n"),
    ("mia_ray/specs.py", "max(1, self.max_epochs // 2)", "max(1, self.max_epochs // 4)"),
]
# What each command's first cell gets (K, attack epochs, train and fine-tune budgets),
# today and after EDITS. A built-in dataset keeps the authors' budget (100 on images,
# 50 on MNIST-1D); a dataset by path and GridSpec's own grid train for TrainSpec's 60.
# Fine-tuning becomes a quarter of training everywhere but in the full grid's smoke
# test, which sets it. The deliberate differences stay: the audit's K, the small grid's
# K = 1, the smoke grids' K, attack epochs and training.
SEEN = {
    "cell":              ((5, 100, 100, 50), (3, 37, 100, 25)),
    "cell by path":      ((5, 100, 100, 50), (3, 37, 60, 15)),
    "audit":             ((AUDIT_SHADOWS, 100, 100, 50), (AUDIT_SHADOWS, 37, 100, 25)),
    "grid":              ((5, 100, 100, 50), (3, 37, 60, 15)),
    "grid by path":      ((5, 100, 100, 50), (3, 37, 60, 15)),
    "small_grid":        ((1, 100, 50, 25), (1, 37, 50, 12)),
    "small_grid smoke":  ((2, 2, 8, 4), (2, 2, 8, 2)),
    "full_grid":         ((5, 100, 100, 50), (3, 37, 100, 25)),
    "full_grid by path": ((5, 100, 100, 50), (3, 37, 60, 15)),
    "full_grid smoke":   ((2, 2, 5, 3), (2, 2, 5, 3)),
}
SETTINGS = ("shadows", "attack_epochs", "train", "finetune")


def probe(root: Path, data: Path) -> dict:
    out = subprocess.run([sys.executable, str(PROBE), str(data)], cwd=root, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    return json.loads(out.stdout)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def patients(tmp_path_factory) -> Path:
    """A small tabular dataset file, as a user would name it."""
    path = tmp_path_factory.mktemp("data") / "patients.npz"
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.normal(size=(60, 5)).astype(np.float32),
             labels=rng.integers(0, 3, 60))
    return path


def test_today_every_command_reads_the_defaults(monkeypatch, patients):
    monkeypatch.chdir(ROOT)
    spec = importlib.util.spec_from_file_location("defaults_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = module.main(str(patients))
    helps = {k: flat(v) for k, v in seen.pop("help").items()}
    assert seen == {k: dict(zip(SETTINGS, today)) for k, (today, _) in SEEN.items()}
    shadows, epochs = spec_default(DatasetSpec, "num_shadows"), spec_default(AttackSpec, "epochs")
    assert f"K, the number of shadow models (default {shadows})" in helps["cell"]
    assert f"epochs of every learned attack (default {epochs}," in helps["cell"]
    assert f"K, the number of shadow models (default {AUDIT_SHADOWS})" in helps["audit"]
    assert f"(default: the grid's, {shadows} unless" in helps["sweep"]


def test_a_changed_default_reaches_every_command_and_its_help(tmp_path, patients):
    """Edit four defaults in a copy of the code (K, attack epochs, the training budget
    and the fine-tune rule) and run every command there: each follows, except where a
    command differs by name. Today's code would fail it wherever a default is restated
    (GridSpec's own K = 5 or fine-tuning of 50, a sweep's attack epochs of 100)."""
    for folder in ("mia_ray", "sweeps", "analysis"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for rel, old, new in EDITS:
        path = tmp_path / rel
        text = path.read_text()
        assert text.count(old) == 1, f"{rel} no longer holds {old!r}: update EDITS"
        path.write_text(text.replace(old, new))
    seen = probe(tmp_path, patients)
    helps = {k: flat(v) for k, v in seen.pop("help").items()}
    assert seen == {k: dict(zip(SETTINGS, edited)) for k, (_, edited) in SEEN.items()}
    assert "K, the number of shadow models (default 3)" in helps["cell"]
    assert "epochs of every learned attack (default 37," in helps["cell"]
    assert "a dataset by path: 60)" in helps["cell"]
    assert f"K, the number of shadow models (default {AUDIT_SHADOWS})" in helps["audit"]
    assert "epochs of every learned attack (default 37," in helps["audit"]
    assert "(default: the grid's, 3 unless" in helps["sweep"]
    assert "(default: the grid's, 37 unless" in helps["sweep"]


# The defaults the docs state, each beside the definition it must match: a changed
# default fails here until its page says so.
DOCUMENTED = [
    ("grid.md", "rounds that reach sparsity 0.9 (default {})", IMP_ROUNDS),
    ("grid.md", "(default {}: none;", spec_default(GridSpec, "num_references")),
    ("grid.md", "queries per sample of `label_only` (default {})",
     spec_default(AttackSpec, "label_queries")),
    ("grid.md", "epochs of every learned attack (default and paper: {})",
     spec_default(AttackSpec, "epochs")),
    ("grid.md", "as one vectorised job (default {};", spec_default(GridSpec, "stack_models")),
    ("grid.md", "of one shape stacked (default {};", spec_default(GridSpec, "stack_attacks")),
    ("grid.md", "PPB may cost (default {})", MAX_TEST_ACC_DROP),
    ("report.md", "(`--max-test-drop`, default {})", MAX_TEST_ACC_DROP),
    ("speed.md", "`--stack-attacks` ready fits (default {};",
     spec_default(GridSpec, "stack_attacks")),
    ("audit.md", "K = {} by default", AUDIT_SHADOWS),
    ("audit.md", "`--max-accuracy-drop` points (default {:g})", MAX_ACCURACY_DROP),
    ("method.md", "`patience` ({}) epochs", spec_default(TrainSpec, "patience")),
    ("method.md", "{} epochs on the image sets, {} on Purchase",
     (AUTHORS_EPOCHS["image"], AUTHORS_EPOCHS["tabular"])),
    ("grid.md", "its kind, {} epochs on images and {} on tabular sets",
     (AUTHORS_EPOCHS["image"], AUTHORS_EPOCHS["tabular"])),
    ("grid.md", "the paper's {} attack epochs, M", PAPER_ATTACK_EPOCHS),
    ("method.md", "(`DefenseSpec.advreg_steps`, default {})",
     spec_default(DefenseSpec, "advreg_steps")),
]


@pytest.mark.parametrize("page, text, value", DOCUMENTED)
def test_the_docs_state_the_defaults_the_code_has(page, text, value):
    values = value if isinstance(value, tuple) else (value,)
    assert text.format(*values) in flat((ROOT / "docs" / page).read_text())
