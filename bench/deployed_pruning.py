"""Pruning as deployed against the paper's l1_unstructured: the README's table.

    python bench/deployed_pruning.py RESULTS            # summarise a finished sweep
    python bench/deployed_pruning.py RESULTS --run      # run the sweep first (resumes)

The sweep (``--run``; on a 2-core CPU about 25 minutes): digits with the small CNN
and a tabular set (scikit-learn's breast-cancer table, 569 samples, 30 standardised
features, 2 classes, written as ``cancer.npz`` beside RESULTS) with the fc net;
5 seeds; ``nm_2_4`` at 0.5, ``global_unstructured``, ``imp`` (3 rounds to 0.9) and
``l1_unstructured`` at 0.5 and 0.9; the original model;
full knowledge, no defense, K = 2 shadows; the threshold attacks and two learned ones
at 10 epochs (a reduced protocol: the paper trains learned attacks for 100).

Per variant it prints, as mean ± 95% t half-width over the 5 seeds: the victim's test
accuracy; the mean accuracy of the dataset's three best attacks (the three with the
highest mean accuracy over all its cells, one fixed set so variants compare alike);
the TPR at 1% FPR of the best of them; and paired per-seed differences of the
three-best accuracy against the original and against l1_unstructured at the same
sparsity, with their 95% interval and "higher", "lower" or "cannot tell".
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.stats import t_interval  # noqa: E402

VARIANTS = [("none", 0.0), ("l1_unstructured", 0.5), ("nm_2_4", 0.5),
            ("global_unstructured", 0.5), ("imp", 0.5), ("l1_unstructured", 0.9),
            ("global_unstructured", 0.9), ("imp", 0.9)]
ATTACKS = "conf,xent,mentr,top1_conf,gap,nn,nn_top3"


def sweep_command(results: Path, data: Path) -> list[str]:
    return [sys.executable, str(ROOT / "sweeps" / "small_grid.py"),
            "--datasets", f"digits,{data}", "--archs", "auto", "--seeds", "0,1,2,3,4",
            "--methods", "nm_2_4,global_unstructured,imp,l1_unstructured",
            "--sparsities", "0.5,0.9", "--knowledge", "original,full", "--defenses", "none",
            "--shadows", "2", "--attacks", ATTACKS, "--attack-epochs", "10",
            "--storage", str(results)]


def write_cancer(path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    # Tabular features are used as they are (docs/datasets.md): standardise them here,
    # as a user would, or the raw scales (up to thousands) stall the fc net's training.
    x = (d.data - d.data.mean(axis=0)) / d.data.std(axis=0)
    np.savez(path, features=x.astype(np.float32), labels=d.target.astype(np.int64))


def pm(values) -> str:
    i = t_interval(values)
    return f"{i.mean:.3f} ± {i.half_width:.3f}"


def diff(values) -> str:
    i = t_interval(values)
    word = "higher" if i.low > 0 else "lower" if i.high < 0 else "cannot tell"
    return f"{i.mean:+.3f} [{i.low:+.3f}, {i.high:+.3f}] {word}"


def summarise(results: Path) -> str:
    attacks = pd.read_parquet(results / "attacks")
    attacks = attacks[attacks.knowledge.isin(["original", "full"])]
    out = []
    for (dataset, arch), frame in attacks.groupby(["dataset", "arch"]):
        best = frame.groupby("attack").accuracy.mean().nlargest(3).index.tolist()
        top = frame[frame.attack.isin(best)]
        per = top.groupby(["method", "sparsity", "seed"]).agg(
            acc=("accuracy", "mean"), test=("victim_test_acc", "first")).sort_index()
        tpr = (top[top.attack == best[0]].set_index(["method", "sparsity", "seed"])
               .tpr_at_1pct_fpr.sort_index())
        nonmembers = int(frame.n_nonmembers.min())
        flag = "" if nonmembers * 0.01 >= 10 else " (unsupported: about " \
            f"{nonmembers * 0.01:.0f} false positives at 1% of {nonmembers} non-members)"
        out += [f"{dataset} / {arch}: three best attacks {', '.join(best)}; TPR of "
                f"{best[0]}{flag}", "",
                "| variant | seeds | test accuracy | 3 best attacks' accuracy | TPR@1%FPR | "
                "vs original (paired) | vs l1_unstructured, same sparsity (paired) |",
                "|---|---|---|---|---|---|---|"]
        done = set(per.index.droplevel("seed"))
        if ("none", 0.0) not in done:
            continue
        original = per.loc[("none", 0.0)]
        for method, sparsity in VARIANTS:
            if (method, sparsity) not in done:
                continue
            cell = per.loc[(method, sparsity)]
            seeds = cell.index.intersection(original.index)
            vs_orig = "" if method == "none" else diff(cell.acc[seeds] - original.acc[seeds])
            vs_l1 = ""
            if method not in ("none", "l1_unstructured") and ("l1_unstructured",
                                                               sparsity) in done:
                l1 = per.loc[("l1_unstructured", sparsity)]
                both = cell.index.intersection(l1.index)
                vs_l1 = diff(cell.acc[both] - l1.acc[both])
            name = "original" if method == "none" else f"{method} {sparsity:g}"
            out.append(f"| {name} | {len(cell)} | {pm(cell.test)} | {pm(cell.acc)} | "
                       f"{pm(tpr.loc[(method, sparsity)])} | {vs_orig} | {vs_l1} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path)
    p.add_argument("--run", action="store_true", help="run (or resume) the sweep first")
    args = p.parse_args()
    if args.run:
        args.results.mkdir(parents=True, exist_ok=True)
        data = args.results.parent / "cancer.npz"
        if not data.exists():
            write_cancer(data)
        subprocess.run(sweep_command(args.results, data), check=True)
    print(summarise(args.results))


if __name__ == "__main__":
    main()
