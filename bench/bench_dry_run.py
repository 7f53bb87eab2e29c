"""The full grid's dry run, this checkout against another commit, side by side.

    python bench/bench_dry_run.py                  # against main, 3 rounds
    python bench/bench_dry_run.py --baseline 36c8798 --rounds 5

Checks the baseline out into a temporary git worktree (removed at the end), then runs
``python sweeps/full_grid.py --dry-run`` in each tree alternately, ``--rounds`` times
each, every run a fresh process with its own tree on ``PYTHONPATH`` and the same
interpreter. Alternating spreads the machine's noise over both. Prints every run's
wall time and CPU time (user + system of the child process, less sensitive than wall
time to other work on a shared machine), each tree's medians, and the ratios
baseline / this checkout (above 1: this checkout is faster). It also checks that both
dry runs print the same plan, so the faster one plans the same work.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import machine

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def dry_run(tree: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, printed plan) of one ``--dry-run`` in ``tree``."""
    env = {**os.environ, "PYTHONPATH": tree}
    cpu, start = _children_cpu(), time.perf_counter()
    out = subprocess.run([sys.executable, "sweeps/full_grid.py", "--dry-run"], cwd=tree,
                         env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, _children_cpu() - cpu, out


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
    # A kill still removes the worktree (finally runs on SystemExit, not on SIGTERM).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    wall: dict[str, list[float]] = {"baseline": [], "this": []}
    cpu: dict[str, list[float]] = {"baseline": [], "this": []}
    plans: dict[str, str] = {}
    try:
        for i in range(args.rounds):
            for name, tree in (("baseline", base), ("this", HERE)):
                seconds, cpu_seconds, plan = dry_run(tree)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
                plans.setdefault(name, plan)
                print(f"  round {i + 1}: {name:<8} wall {seconds:6.1f} s, "
                      f"CPU {cpu_seconds:6.1f} s", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", base], cwd=HERE,
                       capture_output=True, check=False)
    same = plans["baseline"] == plans["this"]
    print(f"same plan printed by both: {same}")
    for what, series in (("wall", wall), ("CPU", cpu)):
        b, t = statistics.median(series["baseline"]), statistics.median(series["this"])
        print(f"median {what}: baseline {b:.1f} s, this checkout {t:.1f} s; "
              f"ratio baseline / this = {b / t:.2f}x")


if __name__ == "__main__":
    main()
