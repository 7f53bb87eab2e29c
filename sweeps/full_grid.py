"""The paper's full grid, for a Ray cluster with shared storage.

    ray up cluster.yaml
    ray attach cluster.yaml   # or ray submit cluster.yaml sweeps/full_grid.py -- ...
    python sweeps/full_grid.py --address auto --storage s3://my-bucket/mia-ray
    python sweeps/full_grid.py --dry-run                        # the plan and its cost
    python sweeps/full_grid.py --datasets cifar10 --archs resnet18 --storage ...

Seven datasets; ResNet-18, VGG-16-BN and DenseNet-121 on images, the FC net on
tabular data; four pruning methods; sparsities 0.5 to 0.9; every adversary-knowledge
setting; PPB at six strengths. Epoch budgets per dataset as the authors' configs:
100 epochs on images, 50 on the tabular sets, fine-tuning for half of that. Each
trainer actor takes a quarter of a GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from mia_ray.catalog import DEFAULT_ATTACKS
from mia_ray.engine.cli import add_sweep_args, describe_plan, run_main, train_and_finetune_specs
from mia_ray.grid import GridSpec, Resources
from mia_ray.planner import plan
from mia_ray.specs import AttackSpec, TrainSpec

PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "chmnist", "purchase100", "texas100",
                  "location")


def full_grid() -> GridSpec:
    return GridSpec(
        datasets=PAPER_DATASETS, archs=("resnet18", "vgg16_bn", "densenet121", "fc"),
        seeds=(0,),
        methods=("l1_unstructured", "l1_structured", "l2_structured", "slimming"),
        sparsities=(0.5, 0.6, 0.7, 0.8, 0.9),
        defenses=("ppb",), strengths=(0.0, 1.0, 2.0, 4.0, 8.0, 16.0),
        num_shadows=5,
        attacks=AttackSpec(names=DEFAULT_ATTACKS, epochs=100),
        train=TrainSpec(), epochs_per_dataset=True,
        trainer=Resources(gpus=0.25, cpus=2.0), trial=Resources(gpus=0.0, cpus=1.0),
    )


def smoke_grid() -> GridSpec:
    """The full grid's code path on digits with the FC net: runs anywhere in a minute."""
    train, finetune = train_and_finetune_specs(epochs=5, finetune_epochs=3)
    return GridSpec(
        datasets=("digits",), archs=("fc",), methods=("l1_unstructured",),
        sparsities=(0.5,), knowledge=("original", "full"), defenses=("ppb",),
        strengths=(4.0,), num_shadows=2, attacks=AttackSpec(epochs=2),
        train=train, finetune=finetune,
        trainer=Resources(gpus=0.0, cpus=1.0), trial=Resources(gpus=0.0, cpus=0.5),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_args(p, storage="results/full_grid")
    args = p.parse_args(argv)
    grid = full_grid()
    if args.smoke_test:
        # The real grid's plan must build (every cell validates) before the tiny run.
        print(describe_plan(plan(grid)).splitlines()[0], "(full grid, planned only)")
        grid = smoke_grid()
        if args.storage == "results/full_grid":
            args.storage = tempfile.mkdtemp(prefix="mia-smoke-")
    return run_main(grid, args)


if __name__ == "__main__":
    sys.exit(main())
