"""Command-line plumbing shared by the scripts in ``sweeps/``.

A script builds its default :class:`GridSpec`, this module lets the user cut it down
(``--datasets``, ``--archs``, ``--methods`` ...), validates everything before Ray
starts, runs the sweep and prints a pandas summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import pandas as pd

from mia_ray.catalog import PAPER_ATTACK_EPOCHS
from mia_ray.cli_options import add_imp_args, comma_separated, rewind_epoch
from mia_ray.core_grid import GridWithCore
from mia_ray.eager import compile_setting
from mia_ray.engine import MAX_FAILURES
from mia_ray.engine.address import check_address
from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.grid import GridSpec, Resources
from mia_ray.keys import spec_default
from mia_ray.planner import (
    CLUSTER_WORKERS,
    EXPECTED_EPOCH_SHARE,
    Plan,
    cpu_hours_estimate,
    gpu_hours_estimate,
    node_hours_estimate,
    plan,
)
from mia_ray.resolution import resolve_axes
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec


def add_sweep_args(p: argparse.ArgumentParser, *, storage: str) -> None:
    p.add_argument("--storage", default=storage,
                   help="root for artifacts and Parquet results: a folder or s3://, gs://")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (HOST:PORT, or 'auto'); default: RAY_ADDRESS, "
                        "else the cluster running on this node (ray start / ray up), else a "
                        "local one; Ray Client (ray://) is not supported")
    p.add_argument("--local", action="store_true",
                   help="start a private local Ray even where a cluster runs")
    p.add_argument("--datasets", type=comma_separated(), help="cut the grid to these datasets")
    p.add_argument("--archs", type=comma_separated(), help="cut the grid to these architectures")
    p.add_argument("--seeds", type=comma_separated(int),
                   help="seeds to run, e.g. 0,1,2,3,4; a seed redraws the split, every "
                        "initialisation and shuffle; adding one to a finished sweep "
                        "trains only its models and attack fits")
    p.add_argument("--methods", type=comma_separated())
    p.add_argument("--sparsities", type=comma_separated(float))
    p.add_argument("--knowledge", type=comma_separated())
    p.add_argument("--defenses", type=comma_separated())
    p.add_argument("--strengths", type=comma_separated(float))
    p.add_argument("--attacks", type=comma_separated())
    p.add_argument("--shadows", type=int,
                   help="K, shadow models per cell (default: the grid's, "
                        f"{spec_default(GridSpec, 'num_shadows')} unless the script says "
                        "otherwise)")
    p.add_argument("--references", type=int,
                   help="N reference models per cell for lira_online and rmia_online "
                        "(even, at most 256; default: the grid's, "
                        f"{spec_default(GridSpec, 'num_references')} = none; only with one "
                        "of them in the attacks); growing N trains only the new ones")
    p.add_argument("--attack-epochs", type=int,
                   help="epochs of every learned attack (default: the grid's, "
                        f"{spec_default(AttackSpec, 'epochs')} unless the script says "
                        f"otherwise; the paper's: {PAPER_ATTACK_EPOCHS}); fewer is faster "
                        "and weaker")
    p.add_argument("--label-queries", type=int,
                   help="M, the perturbed queries per sample of the label_only attack "
                        "(default: the grid's; docs/method.md, \"Label-only\")")
    p.add_argument("--data-root", help="folder with dataset files")
    p.add_argument("--download", action="store_true", default=None,
                   help="let torchvision download CIFAR/SVHN")
    p.add_argument("--trainer-gpus", type=float, help="GPU fraction per trainer actor")
    p.add_argument("--trainer-cpus", type=float, help="CPUs per trainer actor")
    p.add_argument("--trainers", type=int,
                   help="trainer actors (default: fill the cluster the sweep can grow to)")
    p.add_argument("--max-gpus", type=float,
                   help="GPUs to size the trainer pool for, e.g. an autoscaled cluster's "
                        "maximum (default: what the head's autoscaler config allows, else "
                        "the GPUs present)")
    p.add_argument("--stack-models", type=int,
                   help="most models of one cohort trained together as one vectorised job "
                        f"(default {spec_default(GridSpec, 'stack_models')}; 1 trains each "
                        "alone)")
    p.add_argument("--stack-attacks", type=int,
                   help="most attack fits fitted together as one job, their learned "
                        f"networks stacked (default {spec_default(GridSpec, 'stack_attacks')}; "
                        "1 fits each attack alone)")
    add_imp_args(p, rounds_default=None)
    p.add_argument("--max-failures", type=int, default=MAX_FAILURES,
                   help="retries per trial (default %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and the cost estimate; start nothing")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny version of this grid, for CI")


# Command-line options that set one GridSpec field as they are: (option, field).
GRID_OPTIONS = tuple((name, name) for name in (
    "datasets", "archs", "seeds", "methods", "sparsities", "knowledge", "defenses",
    "strengths", "imp_rounds", "data_root", "max_gpus", "stack_models",
    "stack_attacks")) + (("shadows", "num_shadows"), ("references", "num_references"),
                         ("trainers", "num_trainers"))


def apply_overrides(grid: GridSpec, args: argparse.Namespace) -> GridSpec:
    """The user's cuts on top of the script's grid: dataset paths and architecture
    references are resolved here (:mod:`mia_ray.resolution`), the rest is validated
    by GridSpec."""
    compile_setting()  # an environment setting the workers will read: checked up front
    changes: dict = {field: getattr(args, option) for option, field in GRID_OPTIONS
                     if getattr(args, option) is not None}
    if "datasets" in changes or "archs" in changes:
        # The one step that reads dataset files and imports architectures by reference.
        changes.update(resolve_axes(changes.get("datasets", grid.datasets),
                                    changes.get("archs", grid.archs)))
    if args.rewind_epoch is not None:
        changes["rewind_epoch"] = rewind_epoch(args)
    overrides = {field: value for field, value in (
        ("names", args.attacks), ("epochs", args.attack_epochs),
        ("label_queries", args.label_queries)) if value is not None}
    if overrides:
        changes["attacks"] = dataclasses.replace(grid.attacks, **overrides)
    if args.download:
        changes["download"] = True
    if args.trainer_gpus is not None or args.trainer_cpus is not None:
        changes["trainer"] = Resources(
            gpus=args.trainer_gpus if args.trainer_gpus is not None else grid.trainer.gpus,
            cpus=args.trainer_cpus if args.trainer_cpus is not None else grid.trainer.cpus)
    if isinstance(grid, GridWithCore):
        return grid.cut(changes)
    return dataclasses.replace(grid, **changes)


def _seed_list(seeds) -> str:
    return f"{', '.join(map(str, seeds))} ({len(seeds)})"


def describe_grid(grid: GridSpec) -> str:
    """The axes that decide how sure the answers are: seeds and the attack schedule."""
    seeds = f"seeds:                {_seed_list(grid.seeds)}"
    if isinstance(grid, GridWithCore) and grid.core:
        seeds += f" on the whole grid\nclaims core:          {grid.describe_core()}"
    return (seeds + "\n"
            f"attack epochs:        {grid.attacks.epochs} for every learned attack "
            f"(paper: {PAPER_ATTACK_EPOCHS})")


EXPECTED_SHARE_TEXT = f"{EXPECTED_EPOCH_SHARE:.0%}"
EVERYWHERE_SEEDS = (0, 1, 2, 3, 4)
"""The dry run's comparison: every cell at these seeds."""


def _cost_row(label: str, p: Plan, times: int = 1) -> str:
    s = p.summary()
    return (f"  {label:<34} {s['cells'] * times:>7} {s['model_builds'] * times:>8} "
            f"{s['attack_fits'] * times:>7} {gpu_hours_estimate(p) * times:>9.2f} "
            f"{cpu_hours_estimate(p) * times:>12.1f}")


def describe_costs(grid: GridSpec, this_plan: Plan) -> str:
    """The plans to choose from: this run, every cell at ``EVERYWHERE_SEEDS``, and the
    claims core alone. Seeds share no build or fit, so a plan at n seeds costs n times
    the plan at one seed: the five-seed line is computed that way."""
    base = grid.base() if isinstance(grid, GridWithCore) else grid
    one_seed = plan(dataclasses.replace(base, seeds=base.seeds[:1]))
    lines = [
        "plans to choose from:  counts are planned exactly; GPU-hours use assumed per-sample "
        "costs (planner.GPU_SECONDS_PER_SAMPLE_EPOCH); CPU core-hours use per-sample costs "
        "measured by bench/bench_arch_costs.py; both assume early stopping runs "
        f"{EXPECTED_SHARE_TEXT} of the epochs",
        f"  {'plan':<34} {'cells':>7} {'builds':>8} {'fits':>7} {'GPU-h':>9} {'CPU core-h':>12}",
        _cost_row("this run" + (" (the default)" if isinstance(grid, GridWithCore) else ""),
                  this_plan),
        _cost_row(f"--seeds {','.join(map(str, EVERYWHERE_SEEDS))} everywhere", one_seed,
                  len(EVERYWHERE_SEEDS)),
    ]
    core = grid.core_alone() if isinstance(grid, GridWithCore) else None
    if core is not None:
        lines.append(_cost_row("the claims core alone", plan(core)))
    else:
        lines.append("  the claims core alone: this grid has no core; every cell runs at "
                     "its seeds")
    return "\n".join(lines)


def describe_plan(p: Plan) -> str:
    s = p.summary()
    node_hours, wall = node_hours_estimate(p)
    lines = [
        f"cells:                {s['cells']}",
        f"unique model builds:  {s['model_builds']}",
    ]
    for k, v in s.items():
        if k.startswith("builds_"):
            lines.append(f"  {k[7:]:<19} {v}")
    lines += [
        f"unique attack fits:   {s['attack_fits']}",
        f"naive per-cell run:   {s['naive_model_builds']} model trainings, "
        f"{s['naive_attack_fits']} attack fits "
        f"({s['naive_model_builds'] / max(1, s['model_builds']):.1f}x the models)",
        f"GPU-hours (estimate): {gpu_hours_estimate(p):.1f} for the model builds "
        "(see planner.GPU_SECONDS_PER_SAMPLE_EPOCH for the assumptions)",
        f"node-hours (estimate): {node_hours:.1f} on cluster.yaml's {CLUSTER_WORKERS} "
        f"GPU workers and its head, about {wall:.1f} h wall-clock if the GPUs stay busy",
    ]
    return "\n".join(lines)


def summary_table(storage: str) -> pd.DataFrame:
    """Mean attack accuracy per (knowledge, method, sparsity, strength) x attack."""
    attacks = ResultTables(storage).read("attacks")
    if attacks.empty:
        return attacks
    table = attacks.pivot_table(index=["knowledge", "method", "sparsity", "strength"],
                                columns="attack", values="accuracy", aggfunc="mean")
    return table.round(3)


def run_main(grid: GridSpec, args: argparse.Namespace, *, after=None) -> int:
    """Validate, (dry-)run, summarise. Returns the process exit code."""
    try:
        check_address(args.address, local=args.local)
        grid = apply_overrides(grid, args)
        the_plan = plan(grid)
        if args.dry_run:
            print(describe_grid(grid))
            print(describe_plan(the_plan))
            print(describe_costs(grid, the_plan))
            return 0
        # Ray loads here, not at import: --dry-run and --help never pay for it.
        from mia_ray.engine.sweep import run_sweep, validate

        validate(grid, args.storage)
    except (SpecError, DatasetFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe_grid(grid))
    print(describe_plan(the_plan), flush=True)
    outcome = run_sweep(grid, args.storage, address=args.address, local=args.local,
                        max_failures=args.max_failures)
    print(f"\n{len(outcome.plan.cells) - outcome.cells_cached} cells run, "
          f"{outcome.cells_cached} found done; {len(outcome.trained('model'))} models and "
          f"{len(outcome.trained('attack_fit'))} attack fits trained in "
          f"{outcome.seconds:.0f} s")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_rows", 400):
        print(summary_table(args.storage))
    if outcome.errors:
        print(f"{len(outcome.errors)} trials failed; rerun the same command to retry them:",
              file=sys.stderr)
        for err in outcome.errors[:5]:
            print("  " + err.splitlines()[-1][:300], file=sys.stderr)
        return 1
    if after is not None:
        after(args.storage)
    return 0

