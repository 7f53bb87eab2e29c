"""Grid expansion and the planner's deduplication, counted by hand."""

from __future__ import annotations

import pytest

from mia_ray.errors import SpecError
from mia_ray.grid import GridSpec, Resources
from mia_ray.planner import plan
from mia_ray.store import check_writable

METHODS = ("l1_unstructured", "l1_structured", "l2_structured", "slimming")


def paper_small_grid(**changes) -> GridSpec:
    base = dict(datasets=("digits",), archs=("small_cnn",), methods=METHODS,
                sparsities=(0.5, 0.7, 0.9), defenses=("ppb",), strengths=(0.0, 4.0, 16.0),
                num_shadows=5)
    return GridSpec(**{**base, **changes})


def test_plan_counts_match_a_hand_count():
    p = plan(paper_small_grid())
    # 1 original cell + 5 pruned knowledge settings x 4 methods x 3 sparsities x 3 strengths,
    # less the 12 defense_unknown cells at strength 0: with no defense to be unaware of,
    # they are the full-knowledge cells.
    assert len(p.cells) == 1 + 5 * 4 * 3 * 3 - 12
    # 6 originals; per (method, sparsity, defense) 1 pruned victim + 5 pruned shadows. PPB at
    # lambda 0 is plain fine-tuning, the same build as defense_unknown's undefended shadows.
    assert len(p.models) == 6 + 4 * 3 * 3 * 6
    assert len({m.key() for m in p.models}) == len(p.models)
    # One attack fit per shadow set: the originals, plus one per pruned configuration.
    assert len(p.attack_fits) == 1 + 4 * 3 * 3
    # Naive: each cell trains its own victim (+ parent) and shadows (+ parents).
    naive = 6 + (4 * 36 - 12) * (2 + 5 * 2) + 36 * (2 + 5)
    assert p.naive_models == naive
    assert p.naive_models > 5 * len(p.models)


def test_parents_come_before_children():
    p = plan(paper_small_grid(methods=("slimming",), sparsities=(0.5,)))
    seen = set()
    for spec in p.models:
        if spec.prune is not None:
            assert spec.parent().key() in seen
        seen.add(spec.key())


def test_archs_that_do_not_fit_are_skipped_per_dataset():
    g = GridSpec(datasets=("digits", "purchase100"), archs=("small_cnn", "fc"),
                 methods=("l1_unstructured", "slimming"), sparsities=(0.5,),
                 knowledge=("full",), strengths=(4.0,), num_shadows=1)
    archs = {(c.dataset.name, c.arch, c.prune.method) for c in g.cells()}
    assert ("purchase100", "small_cnn", "l1_unstructured") not in archs
    assert ("purchase100", "fc", "slimming") not in archs  # fc has no BatchNorm
    assert ("purchase100", "fc", "l1_unstructured") in archs
    assert ("digits", "small_cnn", "slimming") in archs


@pytest.mark.parametrize("changes, field", [
    (dict(datasets=("digits", "imagenet")), "dataset"),
    (dict(methods=()), "methods"),
    (dict(knowledge=("everything",)), "knowledge"),
    (dict(sparsities=()), "sparsities"),
    (dict(sparsities=(0.5, 1.5)), "sparsity"),
    (dict(strengths=(-1.0,)), "strength"),
    (dict(trainer=Resources(gpus=1.5)), "trainer_gpus"),
    (dict(trial=Resources(gpus=-0.1)), "trial_gpus"),
    (dict(num_shadows=0), "num_shadows"),
    (dict(archs=("resnet50",)), "arch"),
    (dict(stack_models=0), "stack_models"),
    (dict(stack_attacks=0), "stack_attacks"),
    (dict(stack_attacks=65), "stack_attacks"),
])
def test_bad_grid_fails_with_one_clear_message(changes, field):
    with pytest.raises(SpecError) as info:
        paper_small_grid(**changes)
    assert info.value.field == field


def test_unreachable_storage_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SpecError, match="storage"):
        check_writable(str(blocker / "results"))
    with pytest.raises(SpecError, match="storage"):
        check_writable("nosuchscheme://bucket/path")
    check_writable(str(tmp_path / "fine"))  # and a good one passes


def test_one_strength_axis_serves_every_defense():
    g = paper_small_grid(methods=("l1_unstructured",), sparsities=(0.7,), knowledge=("full",),
                         defenses=("none", "ppb", "dpsgd"), strengths=(0.0, 2.0))
    points = sorted((c.defense.name, c.defense.strength) for c in g.cells())
    # PPB at 0 is the undefended victim: one cell with 'none', not a second under 'ppb'.
    assert points == [("dpsgd", 2.0), ("none", 0.0), ("ppb", 2.0)]
    with pytest.raises(SpecError, match="sigma > 0"):
        paper_small_grid(defenses=("dpsgd",), strengths=(0.0,))


def _full_grid():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "sweeps" / "full_grid.py"
    spec = importlib.util.spec_from_file_location("full_grid_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.full_grid()


def test_full_grid_uses_the_authors_epoch_budgets_per_dataset():
    # Their configs: 100 epochs on the image sets, 50 on the tabular ones; prune.py
    # fine-tunes for epochs // 2.
    want = {"cifar10": 100, "cifar100": 100, "svhn": 100, "chmnist": 100,
            "purchase100": 50, "texas100": 50, "location": 50}
    seen: dict[str, set] = {}
    for cell in _full_grid().cells():
        budgets = {(s.train.max_epochs, s.finetune.max_epochs, s.train.patience)
                   for s in (cell.victim(), *cell.shadows()) if s.pruned}
        seen.setdefault(cell.dataset.name, set()).update(budgets)
    assert seen == {name: {(epochs, epochs // 2, 5)} for name, epochs in want.items()}


def test_epochs_per_dataset_keeps_the_other_train_settings():
    from mia_ray.specs import TrainSpec

    grid = GridSpec(datasets=("digits", "location"), archs=("fc",), methods=("l1_unstructured",),
                    sparsities=(0.5,), knowledge=("full",), strengths=(0.0,), num_shadows=1,
                    train=TrainSpec(lr=0.01, batch_size=64), epochs_per_dataset=True)
    budgets = {c.dataset.name: (c.train, c.finetune) for c in grid.cells()}
    assert budgets["location"] == (TrainSpec(max_epochs=50, lr=0.01, batch_size=64),
                                   TrainSpec(max_epochs=25, lr=0.01, batch_size=64))
    assert budgets["digits"][0].max_epochs == 100 and budgets["digits"][1].max_epochs == 50
    plain = GridSpec(datasets=("location",), archs=("fc",), methods=("l1_unstructured",),
                     sparsities=(0.5,), knowledge=("full",), strengths=(0.0,), num_shadows=1)
    assert {(c.train.max_epochs, c.finetune.max_epochs) for c in plain.cells()} == {(100, 50)}


def test_plain_finetuning_is_one_cell_whatever_the_defense_axis_calls_it():
    # none, PPB at 0 and AdvReg at 0 train the same victim; a grid naming all three
    # must attack it once. Counted by hand: 1 original cell, then per knowledge setting
    # the undefended cell plus PPB at 4 and AdvReg at 4 (full: 3; defense_unknown: 2,
    # its undefended cell being the full one), so 6 cells.
    g = paper_small_grid(methods=("l1_unstructured",), sparsities=(0.7,),
                         knowledge=("original", "full", "defense_unknown"),
                         defenses=("none", "ppb", "advreg"), strengths=(0.0, 4.0))
    cells = plan(g).cells
    assert len(cells) == 6
    undefended = [c for c in cells if c.knowledge == "full" and not c.defense.active]
    assert len(undefended) == 1
    assert undefended[0].coordinates()["defense"] == "none"
    assert undefended[0].coordinates()["strength"] == 0.0


def test_analysis_finds_the_one_undefended_cell():
    # The report picks the undefended reference by its coordinates (analysis.load): the
    # canonical cell must be found there, for the PPB trade-off and claim 4 alike.
    import pandas as pd

    from analysis.load import select, strongest_with_strength

    g = paper_small_grid(methods=("l1_unstructured",), sparsities=(0.7,), knowledge=("full",),
                         defenses=("none", "ppb"), strengths=(0.0, 4.0))
    rows = pd.DataFrame([{**c.coordinates(), "attack": "conf", "accuracy": 0.6,
                          "victim_test_acc": 0.9} for c in g.cells()])
    reference = select(rows, knowledge="full", pruned=True, defended=False)
    assert list(zip(reference["defense"], reference["strength"])) == [("none", 0.0)]
    tradeoff = strongest_with_strength(rows)
    assert sorted(tradeoff["strength"]) == [0.0, 4.0]  # one row per strength, no double 0
