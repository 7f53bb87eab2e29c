"""Online against offline LiRA and RMIA on paired seeds (issues #20 and #27).

    python bench/online_vs_offline.py --storage results/online_check \
        --setups mnist1d/fc,digits/small_cnn --references 16,64 --seeds 0,1,2,3,4

Runs one unpruned cell per (setup, N, seed) in this process (knowledge ``original``,
K = 8 shadows), attacked by ``lira`` and ``rmia`` (offline: the K shadows, all OUT)
and ``lira_online`` and ``rmia_online`` (N references, each IN for half the audited
samples), then prints, per setup, N and attack pair, the mean over seeds of online
minus offline at TPR@1%FPR and AUC, with its 95% t-interval and a verdict
(``inconclusive`` when the interval holds 0). Cells run N-major (every setup at the
first N, then the next), so a cut-short run still has whole tables; the references of
N = 16 are the first 16 of N = 64, so the larger N trains only the new ones. A rerun
finds the finished cells in ``--storage`` and only prints the tables.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from analysis.online import online_vs_offline
from analysis.stats import format_interval
from mia_ray.cell import build_cell, parse_args
from mia_ray.evaluation import run_cell
from mia_ray.results import ResultTables
from mia_ray.store import ArtifactStore


def check_cells(args: argparse.Namespace):
    """(setup, N, seed, cell) for every check cell, N-major, so a run cut short still has
    whole tables; this bench and bench/online_signals.py walk the same cells."""
    for n_refs in (int(n) for n in args.references.split(",")):
        for setup in args.setups.split(","):
            dataset, arch = setup.split("/")
            for seed in (int(s) for s in args.seeds.split(",")):
                yield setup, n_refs, seed, build_cell(parse_args([
                    "--dataset", dataset, "--arch", arch, "--knowledge", "original",
                    "--seed", str(seed), "--references", str(n_refs),
                    "--attacks", "lira,rmia,lira_online,rmia_online",
                    *args.cell_args.split()]))


def add_check_args(p: argparse.ArgumentParser) -> None:
    """The options that choose the check cells (this bench and bench/online_signals.py)."""
    p.add_argument("--storage", default="results/online_check")
    p.add_argument("--setups", default="digits/small_cnn",
                   help="dataset/arch pairs, comma-separated")
    p.add_argument("--references", default="16", help="values of N, comma-separated")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--cell-args", default="--shadows 8 --epochs 30",
                   help="more options of python -m mia_ray.cell, as one string")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_check_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    store = ArtifactStore(f"{args.storage}/artifacts")
    results = ResultTables(args.storage)
    for setup, n_refs, seed, cell in check_cells(args):
        if not results.cell_done(cell.key()):
            run_cell(cell, store, results, stack_limit=32)
            print(f"{setup} N={n_refs} seed {seed} done", flush=True)
    table = online_vs_offline(results.read("attacks"))
    table["difference"] = table["difference"].map(format_interval)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
