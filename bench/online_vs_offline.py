"""Online against offline LiRA and RMIA on paired seeds (issue #20's check).

    python bench/online_vs_offline.py --storage results/online_check --seeds 0,1,2,3,4

Runs one unpruned cell per seed in this process (digits and the small CNN by default,
knowledge ``original``), attacked by ``lira`` and ``rmia`` (offline: K shadows, all OUT)
and ``lira_online`` and ``rmia_online`` (N references, half IN per sample), then prints
per attack pair the mean over seeds of online minus offline, at TPR@1%FPR and AUC,
with its 95% t-interval and a verdict (``inconclusive`` when the interval holds 0).
A rerun finds the finished cells in ``--storage`` and only prints the table.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from analysis.stats import t_interval
from mia_ray.cell import build_cell, parse_args
from mia_ray.evaluation import run_cell
from mia_ray.results import ResultTables
from mia_ray.store import ArtifactStore

PAIRS = (("lira_online", "lira"), ("rmia_online", "rmia"))
METRICS = ("tpr_at_1pct_fpr", "auc")


def paired_table(attacks: pd.DataFrame) -> pd.DataFrame:
    """One row per (online, offline, metric): mean difference over seeds and its interval."""
    rows = []
    for online, offline in PAIRS:
        for metric in METRICS:
            wide = attacks.pivot_table(index="seed", columns="attack", values=metric)
            if online not in wide or offline not in wide:
                continue
            diff = (wide[online] - wide[offline]).dropna()
            ci = t_interval(diff.to_numpy())
            verdict = ("inconclusive" if not ci.low > 0 and not ci.high < 0
                       else "online higher" if ci.low > 0 else "offline higher")
            rows.append({"online": online, "offline": offline, "metric": metric,
                         "online_mean": wide[online].mean(), "offline_mean": wide[offline].mean(),
                         "difference": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
                         "seeds": ci.n, "verdict": verdict})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", default="results/online_check")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--cell-args", default="--shadows 8 --references 16 --epochs 30",
                   help="more options of python -m mia_ray.cell, as one string")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    store = ArtifactStore(f"{args.storage}/artifacts")
    results = ResultTables(args.storage)
    for seed in (int(s) for s in args.seeds.split(",")):
        cell = build_cell(parse_args([
            "--knowledge", "original", "--seed", str(seed),
            "--attacks", "lira,rmia,lira_online,rmia_online", *args.cell_args.split()]))
        if not results.cell_done(cell.key()):
            run_cell(cell, store, results, stack_limit=32)
            print(f"seed {seed} done", flush=True)
    table = paired_table(results.read("attacks"))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
