"""The full grid's dry run, this checkout against another commit, side by side.

    python bench/bench_dry_run.py                  # against main, 3 rounds
    python bench/bench_dry_run.py --baseline 36c8798 --rounds 5

Checks the baseline out into a temporary git worktree (removed at the end), then runs
``python sweeps/full_grid.py --dry-run`` in each tree alternately, ``--rounds`` times
each, every run a fresh process with its own tree on ``PYTHONPATH`` and the same
interpreter. Alternating spreads the machine's noise over both. Prints every wall
time, each tree's median, and the ratio baseline / this checkout (above 1: this
checkout is faster). It also checks that both dry runs print the same plan, so the
faster one plans the same work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import machine

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry_run(tree: str) -> tuple[float, str]:
    """(wall seconds, printed plan) of one ``--dry-run`` in ``tree``."""
    env = {**os.environ, "PYTHONPATH": tree}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "sweeps/full_grid.py", "--dry-run"], cwd=tree,
                         env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="main", help="commit or branch to compare with")
    p.add_argument("--rounds", type=int, default=3, help="dry runs per tree")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=HERE,
                            capture_output=True, text=True, check=True).stdout.strip()
    mine = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                          capture_output=True, text=True, check=True).stdout.strip()
    print(machine())
    print(f"python sweeps/full_grid.py --dry-run: baseline {args.baseline} ({commit}) "
          f"against this checkout ({mine}, with its uncommitted changes), "
          f"{args.rounds} rounds, alternating")
    base = tempfile.mkdtemp(prefix="mia-dry-run-baseline-")
    os.rmdir(base)
    subprocess.run(["git", "worktree", "add", "--detach", base, commit], cwd=HERE,
                   capture_output=True, check=True)
    times: dict[str, list[float]] = {"baseline": [], "this": []}
    plans: dict[str, str] = {}
    try:
        for i in range(args.rounds):
            for name, tree in (("baseline", base), ("this", HERE)):
                seconds, plan = dry_run(tree)
                times[name].append(seconds)
                plans.setdefault(name, plan)
                print(f"  round {i + 1}: {name:<8} {seconds:6.1f} s", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", base], cwd=HERE,
                       capture_output=True, check=False)
    same = plans["baseline"] == plans["this"]
    print(f"same plan printed by both: {same}")
    b, t = statistics.median(times["baseline"]), statistics.median(times["this"])
    print(f"median: baseline {b:.1f} s, this checkout {t:.1f} s; "
          f"ratio baseline / this = {b / t:.2f}x")


if __name__ == "__main__":
    main()
