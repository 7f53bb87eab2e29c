"""The paper's full grid, for a Ray cluster with shared storage.

    ray up cluster.yaml
    ray attach cluster.yaml   # or ray submit cluster.yaml sweeps/full_grid.py -- ...
    python sweeps/full_grid.py --storage s3://my-bucket/mia-ray  # joins the cluster
    python sweeps/full_grid.py --dry-run                        # the plan and its cost
    python sweeps/full_grid.py --datasets cifar10 --archs resnet18 --storage ...

Seven datasets; ResNet-18, VGG-16-BN and DenseNet-121 on images, the FC net on
tabular data; four pruning methods; sparsities 0.5 to 0.9; every adversary-knowledge
setting; PPB at six strengths. The cells that decide the claims (the claims core:
the original, every method at 0.7 and 0.9, PPB at lambda 4 against plain fine-tuning)
run at seeds 0-4, the rest at seed 0 (docs/statistics.md, "The full grid's seeds");
``--seeds`` runs the whole grid at the seeds given. Epoch budgets per dataset as the
authors' configs: 100 epochs on images, 50 on the tabular sets, fine-tuning for half of that. Each
trainer actor takes a quarter of a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile

from analysis.claims import MAX_TEST_ACC_DROP, check_max_test_drop
from mia_ray.core_grid import GridWithCore
from mia_ray.engine.cli import add_sweep_args, describe_plan, run_main
from mia_ray.errors import SpecError
from mia_ray.grid import GridSpec, Resources
from mia_ray.planner import plan
from mia_ray.specs import AttackSpec, TrainSpec

# Where this script's grids differ from GridSpec's defaults, and why: the one place. Every
# other setting (the paper's four pruning methods, every knowledge setting, PPB, K, the
# attacks and their epochs, the schedule's lr, batch size and patience) is GridSpec's own.
PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "chmnist", "purchase100", "texas100",
                  "location")
BREADTH_SEEDS = (0,)
"""Seeds of every cell: the figures' shape over sparsities, methods and knowledge (a
design choice of docs/statistics.md, "The full grid's seeds", not the grid's default)."""
CORE_SEEDS = (0, 1, 2, 3, 4)
"""Seeds of the claims core: five paired seeds. The paired t-test at n = 5 detects an
effect of 1.7 per-seed standard deviations with 80% power; one of 1.0 it detects with
power 0.40 only, and needs 10 seeds for 0.8 (analysis.stats.paired_t_power and
seeds_needed; docs/statistics.md, "Why five seeds")."""
HEADLINE_SPARSITY = 0.7
SLOPE_SPARSITY = 0.9
"""Claim 1's slope needs a second sparsity at the core's seeds; the grid's highest, where
the paper's effect is largest."""
HEADLINE_STRENGTH = 4.0
"""PPB's lambda in the authors' code."""
FULL_AXES = dict(
    datasets=PAPER_DATASETS,
    archs=("resnet18", "vgg16_bn", "densenet121", "fc"),  # the paper's networks
    seeds=BREADTH_SEEDS,
    sparsities=(0.5, 0.6, 0.7, 0.8, 0.9),  # the paper's figures' sparsities
    strengths=(0.0, 1.0, 2.0, 4.0, 8.0, 16.0),  # the paper's PPB sweep
    epochs_per_dataset=True,  # the authors' budgets: 100 epochs on images, 50 on tabular
    # A quarter of a GPU per trainer, four to a GPU, each with 2 CPUs to feed it; a
    # trial scores its cell on one CPU.
    trainer=Resources(gpus=0.25, cpus=2.0), trial=Resources(cpus=1.0),
)
SMOKE_ATTACKS = ("conf", "mentr", "nn", "samia", "label_only", "qmia")
"""Threshold, learned and SAMIA: every kind of attack fit, and claim 3's comparison; the
label-only and no-shadow attacks, whose extra features and public-data queries run
through the engine only here."""
SMOKE_AXES = dict(
    # The full grid's code path in a few minutes on a laptop: digits (the built-in image
    # set with no download) with the FC net and the small CNN, two (dataset, arch)
    # groups for the per-group claims table; one method, two sparsities, K = 2, a few
    # epochs. Fine-tuning runs 3 epochs, not half of 5: set so before the half rule was
    # shared, and kept so the smoke grid's keys stay as they were.
    datasets=("digits",), archs=("fc", "small_cnn"),
    methods=("l1_unstructured",), sparsities=(0.5, HEADLINE_SPARSITY),
    knowledge=("original", "full"), strengths=(0.0,),
    num_shadows=2, attacks=AttackSpec(names=SMOKE_ATTACKS, epochs=2),
    train=TrainSpec(max_epochs=5), finetune=TrainSpec(max_epochs=3),
)
SMOKE_CORE_SEEDS = (0, 1)
"""The smoke grid's claims core: two seeds, the fewest a paired test can compare."""


def claims_core(grid: GridSpec, seeds: tuple[int, ...] = CORE_SEEDS,
                sparsities: tuple[float, ...] = (HEADLINE_SPARSITY, SLOPE_SPARSITY)
                ) -> tuple[GridSpec, ...]:
    """The cells that decide the four claims, as two grids of ``grid``'s datasets, archs,
    methods and schedules: the original and every method undefended at ``sparsities``
    with knowledge full (claims 1-3, SAMIA's cells among them); PPB at the headline
    strength against plain fine-tuning at the headline sparsity, attacked with
    undefended shadows as the authors do (claim 4; no shadow of its own)."""
    undefended = dataclasses.replace(grid, seeds=seeds, sparsities=sparsities,
                                     knowledge=("original", "full"), strengths=(0.0,))
    ppb = dataclasses.replace(grid, seeds=seeds, sparsities=(HEADLINE_SPARSITY,),
                              knowledge=("defense_unknown",),
                              strengths=(0.0, HEADLINE_STRENGTH))
    return undefended, ppb


def full_grid() -> GridWithCore:
    grid = GridSpec(**FULL_AXES)
    fields = {f.name: getattr(grid, f.name) for f in dataclasses.fields(GridSpec)}
    return GridWithCore(**fields, core=claims_core(grid))


def smoke_grid() -> GridWithCore:
    """The full grid's code path in a few minutes on a laptop (``SMOKE_AXES``): the
    claims core at two seeds and one more sparsity at seed 0 only."""
    grid = GridSpec(**SMOKE_AXES)
    fields = {f.name: getattr(grid, f.name) for f in dataclasses.fields(GridSpec)}
    return GridWithCore(**fields, core=claims_core(grid, seeds=SMOKE_CORE_SEEDS))


def print_claims_by_group(storage: str, max_test_drop: float) -> None:
    """Write the report and print its claims-by-(dataset, arch) table."""
    from analysis.report import generate_report

    path = generate_report(storage, max_test_drop)
    section = path.read_text().split("### Claims by dataset and architecture")[1]
    print("\nclaims by dataset and architecture:" + section.split("\n### ")[0].rstrip())
    print(f"report: {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_args(p, storage="results/full_grid")
    p.add_argument("--max-test-drop", type=float, default=MAX_TEST_ACC_DROP,
                   help="the smoke test's report: claim 4's test-accuracy margin "
                        f"(default {MAX_TEST_ACC_DROP:g})")
    args = p.parse_args(argv)
    try:
        check_max_test_drop(args.max_test_drop)
    except SpecError as exc:
        p.error(str(exc))
    grid = full_grid()
    if not args.smoke_test:
        # The cluster's results live in its storage; the report is built where they are
        # fetched to (python -m analysis.report, docs/cluster.md).
        return run_main(grid, args)
    # The real grid's plan must build (every cell validates) before the tiny run.
    print(describe_plan(plan(grid)).splitlines()[0], "(full grid, planned only)")
    grid = smoke_grid()
    if args.storage == "results/full_grid":
        args.storage = tempfile.mkdtemp(prefix="mia-smoke-")
    return run_main(grid, args,
                    after=lambda storage: print_claims_by_group(storage, args.max_test_drop))


if __name__ == "__main__":
    sys.exit(main())
