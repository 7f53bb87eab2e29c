"""The paper's claims on the embedded digits dataset: a laptop-sized sweep with seeds.

    python sweeps/small_grid.py                 # local Ray cluster, results/small_grid/
    python sweeps/small_grid.py --dry-run       # seeds, attack epochs, cells, builds, fits
    python sweeps/small_grid.py --seeds 0,1,2,3,4,5,6   # more seeds: only new seeds train
    python sweeps/small_grid.py --address auto  # join a running cluster instead

Five seeds of the smallest grid that tests all four claims on paired seeds, sized to
finish in about ten minutes on a 2-core laptop: the original model against L1-
unstructured pruning at sparsity 0.7, PPB at lambda 4 against plain fine-tuning,
attacked with undefended shadows (``defense_unknown``, the authors' protocol: at
strength 0 it is the full-knowledge cell, and it reuses the undefended pruned shadows,
so PPB costs no attack fit), SAMIA and the eight baselines, and the per-class
divergence of every cell, with K = 2 shadow models. Learned attacks train for the
paper's 100 epochs. That is two attack fits per seed, which are nearly all of the
work on a CPU (BENCHMARKS.md). What was cut to fit: three pruning methods, two
sparsities (so claim 1's slope over sparsity is not tested), the full-knowledge PPB
adversary, three knowledge settings and three shadow models per cell.
Every axis is in ``SMALL_AXES`` below, the one place to trim or widen it; the
command-line cuts (``--seeds``, ``--methods``, ``--sparsities``, ...) override it.
``WIDE_AXES`` is the grid this one was cut from (``--wide``). Ends with a pandas
summary and the report (report.md, report.html, figures/) under the storage root.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from analysis.claims import MAX_TEST_ACC_DROP, check_max_test_drop
from mia_ray.catalog import DEFAULT_ATTACKS, KNOWLEDGE, PAPER_METHODS
from mia_ray.engine.cli import add_sweep_args, run_main, train_and_finetune_specs
from mia_ray.errors import SpecError
from mia_ray.grid import GridSpec
from mia_ray.specs import AttackSpec

# The paper's attack schedule (100 epochs, LR x0.1 at 50 and 75); shorter is an
# explicit --attack-epochs. Attack fits dominate a CPU sweep (SAMIA is nine tenths of
# one; BENCHMARKS.md), so the axes below are sized by the attack fits they need: one
# per distinct shadow set, here per seed the original's and the undefended pruned one.
SMALL_AXES = dict(
    seeds=(0, 1, 2, 3, 4),
    methods=("l1_unstructured",),
    sparsities=(0.7,),
    knowledge=("original", "defense_unknown"),
    defenses=("ppb",),
    strengths=(0.0, 4.0),
    num_shadows=2,
)
"""Cut from ``WIDE_AXES`` to fit about ten minutes on 2 CPU cores (the README's main
command, venv and install included, within 15)."""
WIDE_AXES = dict(
    seeds=(0, 1, 2, 3, 4),
    methods=PAPER_METHODS,
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


def write_report(storage: str, max_test_drop: float = MAX_TEST_ACC_DROP) -> None:
    from analysis.report import generate_report

    path = generate_report(storage, max_test_drop)
    print(f"report: {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_args(p, storage="results/small_grid")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--wide", action="store_true",
                   help="every method, sparsity and knowledge setting (WIDE_AXES)")
    p.add_argument("--max-test-drop", type=float, default=MAX_TEST_ACC_DROP,
                   help="the report's claim-4 margin: the largest victim test-accuracy drop "
                        f"PPB may cost and still keep it (default {MAX_TEST_ACC_DROP:g})")
    args = p.parse_args(argv)
    try:
        check_max_test_drop(args.max_test_drop)
    except SpecError as exc:
        p.error(str(exc))
    grid = small_grid(wide=args.wide)
    if args.smoke_test:
        grid = smoke_grid()
        if args.storage == "results/small_grid":
            args.storage = tempfile.mkdtemp(prefix="mia-smoke-")
    return run_main(grid, args, after=None if args.no_report else
                    (lambda storage: write_report(storage, args.max_test_drop)))


if __name__ == "__main__":
    sys.exit(main())
