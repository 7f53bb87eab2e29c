"""The paper's claims on the embedded digits dataset: a laptop-sized sweep with seeds.

    python sweeps/small_grid.py                 # local Ray cluster, results/small_grid/
    python sweeps/small_grid.py --dry-run       # seeds, attack epochs, cells, builds, fits
    python sweeps/small_grid.py --seeds 0,1,2,3,4,5,6   # more seeds: only new seeds train
    python sweeps/small_grid.py --address auto  # join a running cluster instead

Five seeds of the smallest grid that tests all four claims on paired seeds: the
original model against L1-unstructured pruning at two sparsities (the slope needs
two), PPB at lambda 4 against plain fine-tuning, attacked with full knowledge and
with undefended shadows (``defense_unknown``, the authors' protocol; it reuses the
undefended shadows, so it costs no attack fit), SAMIA and the eight baselines, and the
per-class divergence of every cell. Learned attacks train for the paper's 100 epochs.
Every axis is in ``SMALL_AXES`` below, the one place to trim or widen it; the
command-line cuts (``--seeds``, ``--methods``, ``--sparsities``, ...) override it.
``WIDE_AXES`` is the grid this one was cut from (``--wide``). Ends with a pandas
summary and the report (report.md, report.html, figures/) under the storage root.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from mia_ray.catalog import DEFAULT_ATTACKS, KNOWLEDGE, PRUNING_METHODS
from mia_ray.engine.cli import add_sweep_args, run_main, train_and_finetune_specs
from mia_ray.grid import GridSpec
from mia_ray.specs import AttackSpec

# The paper's attack schedule (100 epochs, LR x0.1 at 50 and 75); shorter is an
# explicit --attack-epochs. Attack fits dominate a CPU sweep (SAMIA is nine tenths of
# one; BENCHMARKS.md), so the axes below are sized by the attack fits they need: one
# per distinct shadow set, i.e. per seed 1 (original) + sparsities x strengths.
SMALL_AXES = dict(
    seeds=(0, 1, 2, 3, 4),
    methods=("l1_unstructured",),
    sparsities=(0.5, 0.9),
    knowledge=("original", "full", "defense_unknown"),
    defenses=("ppb",),
    strengths=(0.0, 4.0),
    num_shadows=5,
)
"""Cut from ``WIDE_AXES`` to fit about 11 minutes on 2 CPU cores."""
WIDE_AXES = dict(
    seeds=(0, 1, 2, 3, 4),
    methods=PRUNING_METHODS,
    sparsities=(0.5, 0.7, 0.9),
    knowledge=KNOWLEDGE,
    defenses=("ppb",),
    strengths=(0.0, 4.0, 16.0),
    num_shadows=5,
)
"""Every method, sparsity and adversary knowledge setting of the earlier small grid."""
ATTACK_EPOCHS = 100


def small_grid(wide: bool = False) -> GridSpec:
    train, finetune = train_and_finetune_specs(epochs=100, finetune_epochs=50)
    return GridSpec(
        datasets=("digits",), archs=("small_cnn",), **(WIDE_AXES if wide else SMALL_AXES),
        attacks=AttackSpec(names=DEFAULT_ATTACKS, epochs=ATTACK_EPOCHS),
        train=train, finetune=finetune,
    )


def smoke_grid() -> GridSpec:
    """Two methods, one sparsity, three knowledge settings, K=2, a few epochs."""
    train, finetune = train_and_finetune_specs(epochs=8, finetune_epochs=4)
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
    p.add_argument("--wide", action="store_true",
                   help="every method, sparsity and knowledge setting (WIDE_AXES)")
    args = p.parse_args(argv)
    grid = small_grid(wide=args.wide)
    if args.smoke_test:
        grid = smoke_grid()
        if args.storage == "results/small_grid":
            args.storage = tempfile.mkdtemp(prefix="mia-smoke-")
    return run_main(grid, args, after=None if args.no_report else write_report)


if __name__ == "__main__":
    sys.exit(main())
