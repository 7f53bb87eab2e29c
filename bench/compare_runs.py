"""How far two sweeps' attack results are apart, cell by cell: for changes meant to be exact.

    MIA_RAY_COMPILE_ATTACKS=0 python sweeps/small_grid.py --storage /tmp/eager
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python sweeps/small_grid.py --storage /tmp/compiled
    python bench/compare_runs.py /tmp/eager /tmp/compiled

Joins the two ``attacks`` tables on (cell, attack) and prints, per attack, the largest
absolute difference in accuracy and AUC, and the mean signed difference (second minus
first). A change that only reorders float arithmetic leaves most attacks identical and
moves the learned ones by far less than the spread between seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

KEY = ["cell_key", "attack"]
METRICS = ["accuracy", "auc"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path, help="storage root of the first sweep")
    p.add_argument("second", type=Path, help="storage root of the second sweep")
    args = p.parse_args(argv)
    first = pd.read_parquet(args.first / "attacks", columns=KEY + METRICS)
    second = pd.read_parquet(args.second / "attacks", columns=KEY + METRICS)
    both = first.merge(second, on=KEY, suffixes=("_1", "_2"), validate="one_to_one")
    print(f"rows: {len(first)} and {len(second)}, {len(both)} in both")
    table = {}
    for metric in METRICS:
        diff = both[f"{metric}_2"] - both[f"{metric}_1"]
        grouped = diff.groupby(both["attack"])
        table[f"max |d {metric}|"] = grouped.apply(lambda d: d.abs().max())
        table[f"mean d {metric}"] = grouped.mean()
    print(pd.DataFrame(table).round(4).to_string())


if __name__ == "__main__":
    main()
