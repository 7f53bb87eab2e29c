"""The paper's claims on the built-in MNIST-1D data: a laptop-sized sweep with seeds.

    python sweeps/small_grid.py                 # local Ray cluster, results/small_grid/
    python sweeps/small_grid.py --dry-run       # seeds, attack epochs, cells, builds, fits
    python sweeps/small_grid.py --seeds 0,1,2,3,4,5,6   # more seeds: only new seeds train
    python sweeps/small_grid.py --datasets digits       # the small CNN on digits instead
    python sweeps/small_grid.py --address auto  # join a running cluster instead

The smallest grid that tests all four claims on paired seeds, sized by measurement to
reach decisive verdicts within the README main command's 15 minutes on 2 CPU cores:
MNIST-1D (generated offline; an fc victim overfits it and leaks, where digits' small
CNN leaks too little for five seeds to decide anything) with the fc network at the
authors' tabular protocol (50 epochs, 25 to fine-tune, patience 5); the original model
against L1-unstructured pruning at two sparsities, 0.5 and 0.9 (so claim 1's slope
over sparsity is tested); PPB at lambda 4 against plain fine-tuning, attacked with
undefended shadows (``defense_unknown``, the authors' protocol: at strength 0 it is
the full-knowledge cell, and it reuses the undefended pruned shadows, so PPB costs no
attack fit); SAMIA and the eight baselines, and the per-class divergence of every
cell; one shadow model per cell (K = 1, as the authors' code). Learned attacks train
for the paper's 100 epochs. That is three attack fits per seed, which are nearly all
of the work on a CPU (BENCHMARKS.md). One protocol for every claim: nothing here is
chosen per claim. What was cut to fit: three pruning methods, the sparsity 0.7, the
full-knowledge PPB adversary, three knowledge settings and four shadow models per cell.
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
from mia_ray.engine.cli import add_sweep_args, run_main
from mia_ray.errors import SpecError
from mia_ray.grid import GridSpec
from mia_ray.specs import AttackSpec, TrainSpec

# Where this script's grids differ from GridSpec's defaults, and why: the one place. Every
# other setting (the architecture 'auto', the attacks and their epochs, the schedule's
# lr, batch size and patience, PPB as the defense) is GridSpec's own default.
WIDE_AXES = dict(
    # MNIST-1D: generated offline, and an fc victim overfits it and leaks, where digits'
    # small CNN leaks too little for five seeds to decide anything.
    datasets=("mnist1d",),
    # Five paired seeds for the claims' paired tests (docs/statistics.md, "Why five seeds").
    seeds=(0, 1, 2, 3, 4),
    # Each dataset's own reference budget (50 epochs for MNIST-1D, 100 for digits) and
    # half of it to fine-tune, so --datasets digits runs as the authors' config.
    epochs_per_dataset=True,
)
"""The grid the small grid was cut from (``--wide``): every method, sparsity, knowledge
setting and PPB strength of GridSpec's defaults, and K as GridSpec's."""
SMALL_AXES = dict(
    WIDE_AXES,
    # Attack fits dominate a CPU sweep (SAMIA is nine tenths of one; BENCHMARKS.md), so
    # the axes are sized by the fits they need: one per distinct shadow set, here per
    # seed the original's and one per sparsity (the undefended pruned shadows, which the
    # PPB cells reuse). Cut to fit the README's main command, venv and install included,
    # within 15 minutes on 2 CPU cores (docs/report.md, "The small grid").
    methods=("l1_unstructured",),
    sparsities=(0.5, 0.9),  # two, so that claim 1's slope over sparsity is tested
    # The original, and the authors' PPB adversary (undefended shadows, which the PPB
    # cells share with the undefended ones: PPB costs no attack fit).
    knowledge=("original", "defense_unknown"),
    strengths=(0.0, 4.0),  # PPB at the authors' lambda against plain fine-tuning
    num_shadows=1,  # K = 1, as the authors' code
)
"""The small grid: every axis is here, the one place to trim or widen it."""
SMOKE_TRAIN = TrainSpec(max_epochs=8)
SMOKE_AXES = dict(
    # CI's tiny version: a few epochs, K = 2, two methods, one sparsity; digits because
    # the small CNN needs images and digits is the built-in image set with no download.
    datasets=("digits",), archs=("small_cnn",),
    methods=("l1_unstructured", "slimming"), sparsities=(0.7,),
    knowledge=("original", "full", "defense_unknown"), strengths=(0.0, 4.0),
    num_shadows=2, attacks=AttackSpec(epochs=2),
    train=SMOKE_TRAIN, finetune=SMOKE_TRAIN.finetune_budget(),
)


def small_grid(wide: bool = False) -> GridSpec:
    return GridSpec(**(WIDE_AXES if wide else SMALL_AXES))


def smoke_grid() -> GridSpec:
    """Two methods, one sparsity, three knowledge settings, K=2, a few epochs."""
    return GridSpec(**SMOKE_AXES)


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
