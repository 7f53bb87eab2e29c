"""What a cell's within-cell intervals cost: metrics.bootstrap_intervals per attack.

    python bench/bench_bootstrap.py
    python bench/bench_bootstrap.py --members 404 --attacks 9 --repeat 5

One cell of the small grid on digits: 404 members and 404 non-members audited, nine
attacks, each row's AUC and TPR@1%FPR interval from a stratified bootstrap. Times the
default number of resamples against 200 (the count before it was raised), alternated,
best of ``--repeat``, and prints the seconds per cell of each and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import busy_warning, machine

from mia_ray.metrics import BOOTSTRAP_RESAMPLES, bootstrap_intervals


def cell_seconds(member: np.ndarray, scores: list[np.ndarray], resamples: int) -> float:
    start = time.perf_counter()
    for i, score in enumerate(scores):
        bootstrap_intervals(member, score, resamples=resamples, seed=i)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=404, help="members = non-members audited")
    p.add_argument("--attacks", type=int, default=9)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print(machine())
    print(busy_warning())
    rng = np.random.default_rng(0)
    n = args.members
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    scores = [np.r_[rng.normal(0.3, 1, n), rng.normal(0, 1, n)] for _ in range(args.attacks)]
    best = {200: np.inf, BOOTSTRAP_RESAMPLES: np.inf}
    for _ in range(args.repeat):
        for resamples in best:
            best[resamples] = min(best[resamples], cell_seconds(member, scores, resamples))
    for resamples, seconds in best.items():
        print(f"{resamples:>5} resamples: {seconds:.3f} s per cell "
              f"({seconds / args.attacks * 1000:.0f} ms per attack)")
    print(f"ratio {BOOTSTRAP_RESAMPLES} / 200: x{best[BOOTSTRAP_RESAMPLES] / best[200]:.2f}")


if __name__ == "__main__":
    main()
