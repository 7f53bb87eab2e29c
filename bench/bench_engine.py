"""The Ray engine against a naive one-experiment-per-cell run of the same cells.

    python bench/bench_engine.py                      # the reduced grid below
    python bench/bench_engine.py --knowledge original,full,defense_unknown,pruning_unknown

Reduced small grid: digits, small_cnn, l1_unstructured and slimming at sparsity 0.5
and 0.9, PPB strength 0 and 4, K = 3 shadows, the eight baselines and SAMIA at 5
attack epochs, the small grid's training schedules (100 / 50 epochs, patience 5).

Engine: ``mia_ray.engine.run_sweep`` (starts a local Ray, trainer actors on every
core, one Tune trial per cell, each build once, a cohort's victim and shadows trained
together as one stacked job); then the same engine with ``stack_models=1`` (each
model trained alone), to show what stacking adds inside the engine. Naive: the same cells one after
another in this process, each with a fresh artifact store, so every cell retrains its
own victim, shadows and their parents one at a time and fits its own attacks, as a
codebase that runs one experiment per command does. The naive run uses torch's default thread
count (all cores), as such a command would.

Prints both wall times and their ratio, the model trainings each did (engine: the
builds its trainers ran; naive: counted through run_cell's on_train), the attack
fits, the peak RSS of the driver and of the trainer actors, and for scale the
planner's counts for the full small grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

import torch
from common import PeakRSS, busy_warning, machine, own_peak_mib, timed

from mia_ray.evaluation import run_cell
from mia_ray.grid import GridSpec
from mia_ray.planner import plan
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec
from mia_ray.store import ArtifactStore

KNOWLEDGE = ("original", "full", "defense_unknown", "pruning_unknown", "method_unknown")


def reduced_grid(knowledge: tuple[str, ...]) -> GridSpec:
    # The default schedule (100 epochs, 50 to fine-tune): GridSpec's own.
    return GridSpec(
        datasets=("digits",), archs=("small_cnn",), seeds=(0,),
        methods=("l1_unstructured", "slimming"), sparsities=(0.5, 0.9),
        knowledge=knowledge, defenses=("ppb",), strengths=(0.0, 4.0), num_shadows=3,
        attacks=AttackSpec(epochs=5),
    )


def run_engine(grid: GridSpec, storage: str):
    import ray

    from mia_ray.engine import run_sweep

    with PeakRSS("ray::Trainer") as trainers:
        seconds, outcome = timed(lambda: run_sweep(grid, storage, progress=False))
    ray.shutdown()
    if outcome.errors:
        sys.exit(f"engine run failed: {outcome.errors[:2]}")
    return seconds, outcome, trainers


def run_naive(grid: GridSpec, base: str) -> tuple[float, int, int]:
    trained = []
    device = torch.device("cpu")

    def every_cell() -> None:
        for i, cell in enumerate(plan(grid).cells):
            root = os.path.join(base, f"cell{i:03d}")
            run_cell(cell, ArtifactStore(os.path.join(root, "artifacts")), ResultTables(root),
                     device=device, on_train=trained.append, stack_limit=1)

    seconds, _ = timed(every_cell)
    return seconds, len(trained), len(plan(grid).cells)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--knowledge", default=",".join(KNOWLEDGE))
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-unstacked", action="store_true",
                   help="skip the engine run with stack_models=1")
    args = p.parse_args(argv)
    grid = reduced_grid(tuple(args.knowledge.split(",")))
    the_plan = plan(grid)
    print(machine())
    if busy_warning():
        print(busy_warning())
    s = the_plan.summary()
    print(f"reduced grid: {s['cells']} cells, {s['model_builds']} unique models "
          f"(planner's naive count {s['naive_model_builds']}), {s['attack_fits']} attack fits",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="mia-bench-engine-") as tmp:
        t_engine, outcome, trainers = run_engine(grid, os.path.join(tmp, "engine"))
        engine_models = len(outcome.trained("model"))
        engine_fits = len(outcome.trained("attack_fit"))
        print(f"engine: {t_engine:.1f} s wall, {engine_models} model trainings, "
              f"{engine_fits} attack fits; peak RSS driver {own_peak_mib():.0f} MiB, "
              f"trainer actors max {trainers.max_mib():.0f} MiB "
              f"({len(trainers.peaks)} trainer processes seen)", flush=True)
        if not args.skip_unstacked:
            alone = dataclasses.replace(grid, stack_models=1)
            t_alone, outcome_alone, _ = run_engine(alone, os.path.join(tmp, "engine-alone"))
            print(f"engine, each model alone (stack_models=1): {t_alone:.1f} s wall, "
                  f"{len(outcome_alone.trained('model'))} model trainings; stacking inside "
                  f"the engine: x{t_alone / t_engine:.2f} wall time", flush=True)
        if not args.skip_naive:
            t_naive, naive_models, naive_fits = run_naive(grid, os.path.join(tmp, "naive"))
            print(f"naive (torch threads {torch.get_num_threads()}): {t_naive:.1f} s wall, "
                  f"{naive_models} model trainings, {naive_fits} attack fits")
            print(f"ratio: x{t_naive / t_engine:.2f} wall time, "
                  f"x{naive_models / max(1, engine_models):.2f} model trainings, "
                  f"x{naive_fits / max(1, engine_fits):.2f} attack fits")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "sweeps"))
    from small_grid import small_grid

    full = plan(small_grid())
    print(f"full small grid: plan(grid).naive_models = {full.naive_models}, "
          f"len(plan(grid).models) = {len(full.models)} "
          f"(x{full.naive_models / len(full.models):.2f}); attack fits {full.naive_attack_fits} "
          f"naive vs {len(full.attack_fits)}")


if __name__ == "__main__":
    main()
