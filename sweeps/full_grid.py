"""The paper's full grid, for a Ray cluster with shared storage.

    ray up cluster.yaml
    ray attach cluster.yaml   # or ray submit cluster.yaml sweeps/full_grid.py -- ...
    python sweeps/full_grid.py --address auto --storage s3://my-bucket/mia-ray
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
from mia_ray.catalog import DEFAULT_ATTACKS
from mia_ray.core_grid import GridWithCore
from mia_ray.engine.cli import add_sweep_args, describe_plan, run_main, train_and_finetune_specs
from mia_ray.errors import SpecError
from mia_ray.grid import GridSpec, Resources
from mia_ray.planner import plan
from mia_ray.specs import AttackSpec, TrainSpec

PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "chmnist", "purchase100", "texas100",
                  "location")


BREADTH_SEEDS = (0,)
"""Seeds of every cell: the figures' shape over sparsities, methods and knowledge."""
CORE_SEEDS = (0, 1, 2, 3, 4)
"""Seeds of the claims core: five paired seeds, enough to decide an effect of about one
per-seed standard deviation (docs/statistics.md)."""
HEADLINE_SPARSITY = 0.7
SLOPE_SPARSITY = 0.9
"""Claim 1's slope needs a second sparsity at the core's seeds; the grid's highest, where
the paper's effect is largest."""
HEADLINE_STRENGTH = 4.0
"""PPB's lambda in the authors' code."""


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
    grid = GridSpec(
        datasets=PAPER_DATASETS, archs=("resnet18", "vgg16_bn", "densenet121", "fc"),
        seeds=BREADTH_SEEDS,
        methods=("l1_unstructured", "l1_structured", "l2_structured", "slimming"),
        sparsities=(0.5, 0.6, 0.7, 0.8, 0.9),
        defenses=("ppb",), strengths=(0.0, 1.0, 2.0, 4.0, 8.0, 16.0),
        num_shadows=5,
        attacks=AttackSpec(names=DEFAULT_ATTACKS, epochs=100),
        train=TrainSpec(), epochs_per_dataset=True,
        trainer=Resources(gpus=0.25, cpus=2.0), trial=Resources(gpus=0.0, cpus=1.0),
    )
    fields = {f.name: getattr(grid, f.name) for f in dataclasses.fields(GridSpec)}
    return GridWithCore(**fields, core=claims_core(grid))


SMOKE_ATTACKS = ("conf", "mentr", "nn", "samia")
"""Threshold, learned and SAMIA: every kind of attack fit, and claim 3's comparison."""


def smoke_grid() -> GridWithCore:
    """The full grid's code path in a few minutes on a laptop: digits with the FC net and
    the small CNN (two (dataset, arch) groups for the per-group claims table), the claims
    core at two seeds and one more sparsity at seed 0 only, K = 2, a few epochs."""
    train, finetune = train_and_finetune_specs(epochs=5, finetune_epochs=3)
    grid = GridSpec(
        datasets=("digits",), archs=("fc", "small_cnn"), seeds=(0,),
        methods=("l1_unstructured",), sparsities=(0.5, HEADLINE_SPARSITY),
        knowledge=("original", "full"), defenses=("ppb",), strengths=(0.0,),
        num_shadows=2, attacks=AttackSpec(names=SMOKE_ATTACKS, epochs=2),
        train=train, finetune=finetune,
        trainer=Resources(gpus=0.0, cpus=1.0), trial=Resources(gpus=0.0, cpus=0.5),
    )
    fields = {f.name: getattr(grid, f.name) for f in dataclasses.fields(GridSpec)}
    return GridWithCore(**fields, core=claims_core(grid, seeds=(0, 1)))


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
