"""The label-only and no-shadow measurement of docs/beyond_the_paper.md, in one process.

    OMP_NUM_THREADS=1 python bench/beyond_the_paper.py --storage results/beyond
    OMP_NUM_THREADS=1 python bench/beyond_the_paper.py --storage results/beyond --seeds 4,3

(the second, optional, beside the first: two processes on one storage split the seeds;
one thread each, because on a crowded 2-core machine two intra-op threads per process
wait on each other at every operation and the attack fit slows a hundredfold).

The small grid's protocol (sweeps/small_grid.py: MNIST-1D, fc, seeds 0-4, the original
and L1-unstructured pruning at sparsities 0.5 and 0.9, K = 1, the authors' tabular
schedule, learned attacks at 100 epochs), undefended, attacked by ``ATTACKS``. Each
cell runs through :func:`mia_ray.evaluation.run_cell`, the step every sweep trial
runs, so the results equal those of

    python sweeps/small_grid.py --strengths 0 --attacks <ATTACKS> --storage results/beyond

(the same layout: a folder holds both runs' cells, and either resumes the other's).
In-process: on a crowded machine Ray's workers can be killed for memory, one
process is not. SAMIA is left out for time (nine tenths of an attack fit on a CPU).
Writes report.md under ``--storage``; its "Beyond the paper" section is the page's table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))

from small_grid import small_grid  # noqa: E402

from analysis.report import generate_report  # noqa: E402
from mia_ray.engine.sweep import layout  # noqa: E402
from mia_ray.evaluation import run_cell  # noqa: E402
from mia_ray.results import ResultTables  # noqa: E402
from mia_ray.store import ArtifactStore  # noqa: E402

ATTACKS = ("conf", "xent", "mentr", "top1_conf", "nn", "gap", "lira", "rmia",
           "label_only", "qmia")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--seeds", default="0,1,2,3,4",
                   help="a subset, for a second process on the same storage")
    args = p.parse_args()
    grid = small_grid()
    grid = dataclasses.replace(grid, strengths=(0.0,),
                               seeds=tuple(int(s) for s in args.seeds.split(",")),
                               attacks=dataclasses.replace(grid.attacks, names=ATTACKS))
    store_root, results_root = layout(str(Path(args.storage).resolve()))
    store, results = ArtifactStore(store_root), ResultTables(results_root)
    cells = grid.cells()
    for i, cell in enumerate(cells, 1):
        if not results.cell_done(cell.key()):
            run_cell(cell, store, results)
        print(f"cell {i}/{len(cells)} done", flush=True)
    print(generate_report(results_root))


if __name__ == "__main__":
    main()
