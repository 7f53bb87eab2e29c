"""A tiny sweep as a separate driver process, for the resume and multi-node tests.

    python tests/sweep_driver.py STORAGE [--address ADDR] [--events FILE]
"""

from __future__ import annotations

import argparse
import json

from mia_ray.grid import GridSpec, Resources
from mia_ray.specs import AttackSpec, TrainSpec


def tiny_grid(**changes) -> GridSpec:
    """digits, small_cnn, 2 methods x 1 sparsity x 3 knowledge x 2 strengths, K=2."""
    base = dict(
        datasets=("digits",), archs=("small_cnn",),
        methods=("l1_unstructured", "slimming"), sparsities=(0.7,),
        knowledge=("original", "full", "defense_unknown"),
        defenses=("ppb",), strengths=(0.0, 4.0), num_shadows=2,
        attacks=AttackSpec(names=("conf", "top1_conf", "gap", "nn"), epochs=1),
        train=TrainSpec(max_epochs=3), finetune=TrainSpec(max_epochs=2),
        trainer=Resources(cpus=1.0), trial=Resources(cpus=0.5),
    )
    return GridSpec(**{**base, **changes})


def main() -> None:
    from mia_ray.engine import run_sweep

    p = argparse.ArgumentParser()
    p.add_argument("storage")
    p.add_argument("--address")
    p.add_argument("--events")
    p.add_argument("--trainers", type=int, default=0)
    args = p.parse_args()
    outcome = run_sweep(tiny_grid(num_trainers=args.trainers), args.storage,
                        address=args.address, num_cpus=3, progress=False)
    if args.events:
        with open(args.events, "w") as f:
            json.dump({"events": outcome.events, "trials": outcome.trial_results,
                       "errors": outcome.errors}, f)


if __name__ == "__main__":
    main()
