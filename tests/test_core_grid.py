"""The full grid's seed design: the claims core at five seeds, the rest at one; the
dry run's plans to choose from. The claims table of a real two-group sweep is checked on
the full grid's smoke run (``tests/test_engine.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import sys
from pathlib import Path

import pytest

from mia_ray.engine.cli import add_sweep_args, apply_overrides
from mia_ray.grid import GridSpec
from mia_ray.planner import plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))
import full_grid  # noqa: E402  (a script folder, not a package)

CUT = ["--datasets", "cifar10", "--archs", "resnet18"]
"""One (dataset, arch) group of the full grid, every pruning method; planned in seconds."""


@functools.cache
def the_full_grid() -> GridSpec:
    return full_grid.full_grid()  # expanding 8,730 cells takes seconds: once per session


@functools.cache
def cut_grid(*flags: str) -> GridSpec:
    p = argparse.ArgumentParser()
    add_sweep_args(p, storage="unused")
    return apply_overrides(the_full_grid(), p.parse_args([*CUT, *flags]))


def coords(cell) -> dict:
    return dict(knowledge=cell.knowledge, arch=cell.arch,
                method=cell.prune.method if cell.prune else "none",
                sparsity=cell.prune.sparsity if cell.prune else 0.0,
                defense=cell.defense.name, strength=cell.defense.strength)


def seeds_by(cells, **where) -> set[int]:
    """The seeds of the cells whose coordinates match ``where``."""
    return {c.dataset.seed for c in cells
            if all(coords(c)[k] == v for k, v in where.items())}


def test_claims_core_gets_five_seeds_and_the_rest_one():
    cells = cut_grid().cells()
    five, one = {0, 1, 2, 3, 4}, {0}
    assert seeds_by(cells, knowledge="original") == five
    for method in ("l1_unstructured", "l1_structured", "l2_structured", "slimming"):
        # each method at the headline sparsity, undefended, full knowledge (SAMIA's cells)
        assert seeds_by(cells, method=method, sparsity=0.7, knowledge="full", strength=0.0) \
            == five
        # claim 1's slope: the second sparsity
        assert seeds_by(cells, method=method, sparsity=0.9, knowledge="full", strength=0.0) \
            == five
        # PPB against no defense, attacked with undefended shadows as the authors do
        assert seeds_by(cells, method=method, sparsity=0.7, knowledge="defense_unknown",
                        defense="ppb", strength=4.0) == five
        # the rest of the grid: one seed
        assert seeds_by(cells, method=method, sparsity=0.5, knowledge="full") == one
        assert seeds_by(cells, method=method, sparsity=0.7, knowledge="full",
                        strength=16.0) == one
        assert seeds_by(cells, method=method, knowledge="pruning_unknown") == one


def test_seeds_flag_overrides_everything():
    grid = cut_grid("--seeds", "3,7")
    assert {c.dataset.seed for c in grid.cells()} == {3, 7}
    base = dataclasses.replace(cut_grid().base(), seeds=(3, 7))
    assert {c.key() for c in grid.cells()} == {c.key() for c in base.cells()}


def test_cuts_narrow_the_core_and_never_add_to_it():
    assert {c.dataset.seed for c in cut_grid("--sparsities", "0.5").cells()} == {0}
    narrowed = cut_grid("--sparsities", "0.5,0.7").cells()
    assert seeds_by(narrowed, sparsity=0.7, knowledge="full", strength=0.0) == {0, 1, 2, 3, 4}
    assert not seeds_by(narrowed, sparsity=0.9)


@pytest.mark.slow
def test_the_core_adds_only_builds_of_its_own_seeds():
    """A sweep already run at one seed keeps every build: the default adds only the
    builds of seeds 1-4, and a sixth core seed adds only builds of that seed."""
    default = plan(cut_grid())
    today = plan(cut_grid("--seeds", "0"))
    old = {m.key() for m in today.models}
    added = [m for m in default.models if m.key() not in old]
    assert old <= {m.key() for m in default.models}
    assert added and {m.dataset.seed for m in added} == {1, 2, 3, 4}
    grid = cut_grid()
    six = dataclasses.replace(grid, core=tuple(
        dataclasses.replace(g, seeds=(0, 1, 2, 3, 4, 5)) for g in grid.core))
    more = {m.key(): m for m in plan(six).models}
    assert {m.dataset.seed for k, m in more.items()
            if k not in {m.key() for m in default.models}} == {5}


@pytest.mark.slow
def test_dry_run_prints_the_three_plans_with_their_counts(capsys):
    assert full_grid.main(["--dry-run", *CUT]) == 0
    out = capsys.readouterr().out
    assert "claims core:          seeds 0, 1, 2, 3, 4 on sparsities 0.7, 0.9" in out
    rows = {}
    for label in ("this run (the default)", "--seeds 0,1,2,3,4 everywhere",
                  "the claims core alone"):
        line = next(x for x in out.splitlines() if x.strip().startswith(label))
        rows[label] = [float(v) for v in re.findall(r"[\d.]+", line[len(label) + 2:])]
    # Counts recomputed from plans built here, independently of the printed shortcut.
    grid = cut_grid()
    five = plan(dataclasses.replace(grid.base(), seeds=(0, 1, 2, 3, 4)))
    for label, p in (("this run (the default)", plan(grid)),
                     ("--seeds 0,1,2,3,4 everywhere", five),
                     ("the claims core alone", plan(grid.core_alone()))):
        assert rows[label][:3] == [len(p.cells), len(p.models), len(p.attack_fits)]
    assert rows["the claims core alone"][0] < rows["this run (the default)"][0] \
        < rows["--seeds 0,1,2,3,4 everywhere"][0]
    assert "assumed per-sample costs" in out and "measured by bench/bench_arch_costs.py" in out
