"""The paper's grid on the embedded digits dataset: a laptop-sized sweep.

    python sweeps/small_grid.py                 # local Ray cluster, results/small_grid/
    python sweeps/small_grid.py --address auto  # join a running cluster instead

All four pruning methods at three sparsities, every adversary-knowledge setting and
PPB at three strengths (0 is plain fine-tuning), eight baselines and SAMIA, on
scikit-learn's bundled digits (no download). Ends with a pandas summary and the
report (report.md, report.html, figures/) under the storage root.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from mia_ray.engine.cli import add_sweep_args, run_main, small_train_specs
from mia_ray.grid import GridSpec
from mia_ray.specs import DEFAULT_ATTACKS, AttackSpec

# Attack training dominates a CPU grid: SAMIA's 100 paper epochs per shadow set, and
# the grid has one attack fit per distinct shadow set (BENCHMARKS.md section 4 has the
# timings). On digits 10 epochs reach the same victim accuracy as 30 (README, "One
# cell, in one process", with the commands), at a third of the cost.
SMALL_ATTACK_EPOCHS = 10


def small_grid() -> GridSpec:
    train, finetune = small_train_specs(epochs=100, finetune_epochs=50)
    return GridSpec(
        datasets=("digits",), archs=("small_cnn",), seeds=(0,),
        methods=("l1_unstructured", "l1_structured", "l2_structured", "slimming"),
        sparsities=(0.5, 0.7, 0.9),
        defenses=("ppb",), strengths=(0.0, 4.0, 16.0),
        num_shadows=5,
        attacks=AttackSpec(names=DEFAULT_ATTACKS, epochs=SMALL_ATTACK_EPOCHS),
        train=train, finetune=finetune,
    )


def smoke_grid() -> GridSpec:
    """Two methods, one sparsity, three knowledge settings, K=2, a few epochs."""
    train, finetune = small_train_specs(epochs=8, finetune_epochs=4)
    return GridSpec(
        datasets=("digits",), archs=("small_cnn",), seeds=(0,),
        methods=("l1_unstructured", "slimming"), sparsities=(0.7,),
        knowledge=("original", "full", "defense_unknown"),
        defenses=("ppb",), strengths=(0.0, 4.0), num_shadows=2,
        attacks=AttackSpec(names=DEFAULT_ATTACKS, epochs=2),
        train=train, finetune=finetune,
    )


def write_report(storage: str) -> None:
    from analysis.report import generate_report

    path = generate_report(storage)
    print(f"report: {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_args(p, storage="results/small_grid")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    args = p.parse_args(argv)
    grid = small_grid()
    if args.smoke_test:
        grid = smoke_grid()
        if args.storage == "results/small_grid":
            args.storage = tempfile.mkdtemp(prefix="mia-smoke-")
    return run_main(grid, args, after=None if args.no_report else write_report)


if __name__ == "__main__":
    sys.exit(main())
