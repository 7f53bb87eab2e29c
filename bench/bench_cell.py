"""One cell end to end, old code against this code, side by side in one run.

    git worktree add /tmp/old 52e3666          # the code before the training-loop redesign
    python bench/bench_cell.py --old /tmp/old --attack-epochs 100 --rounds 3

Runs ``python -m mia_ray.cell`` (digits, small_cnn, l1_unstructured 0.7, knowledge
full, K = 5, the default attacks: four learned ones) with ``PYTHONPATH`` at ``--old``
and at this checkout, each on a fresh store, all on one compile cache. A first pair
(old, then new) warms the cache: the old code pays SAMIA's ``torch.compile`` (cold),
and the new one finds the same graph compiled or compiles its own. Then ``--rounds``
pairs alternate which code runs first, so a load that drifts during the run hits both
alike. Each round prints old / new; the last line is their geometric mean with a 95%
Student-t interval over the rounds' log ratios. ``--reference`` adds one run of this
code with ``--stack-attacks 1`` (every attack alone).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import busy_warning, machine, ratio_interval

HERE = Path(__file__).resolve().parents[1]


def run_cell(code: Path, extra: list[str], attack_epochs: int, threads: int,
             compile_cache: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads),
               "TORCHINDUCTOR_CACHE_DIR": compile_cache}
        cmd = [sys.executable, "-m", "mia_ray.cell", "--attack-epochs", str(attack_epochs),
               "--store", f"{tmp}/store", "--results", f"{tmp}/results", *extra]
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=code, check=True, capture_output=True)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="checkout of the old code")
    p.add_argument("--attack-epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3,
                   help="timed (old, new) pairs after the warm-up pair")
    p.add_argument("--reference", action="store_true",
                   help="also this code with --stack-attacks 1")
    args = p.parse_args(argv)
    print(machine())
    if busy_warning():
        print(busy_warning())
    codes = {"old": Path(args.old), "new": HERE}
    with tempfile.TemporaryDirectory() as cache:
        def run(which: str, extra: list[str] = ()) -> float:
            seconds = run_cell(codes[which], list(extra), args.attack_epochs, args.threads,
                               cache)
            print(f"  {which} code{' ' + ' '.join(extra) if extra else ''}: {seconds:.1f} s",
                  flush=True)
            return seconds

        print("warm-up pair (compile cache cold for the first):")
        run("old")
        run("new")
        ratios = []
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 else ("new", "old")
            print(f"round {r + 1}:")
            seconds = {which: run(which) for which in order}
            ratios.append(seconds["old"] / seconds["new"])
            print(f"  old / new: x{ratios[-1]:.2f}", flush=True)
        if args.reference:
            run("new", ["--stack-attacks", "1"])
    print(f"ratio, one cell at --attack-epochs {args.attack_epochs}, old / new over "
          f"{args.rounds} rounds: {ratio_interval(ratios)}")


if __name__ == "__main__":
    main()
