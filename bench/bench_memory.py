"""Peak memory of the small-grid driver and its Ray workers, and the artifact store's size.

    python bench/bench_memory.py                          # runs the small grid afresh
    python bench/bench_memory.py --smoke-test             # its --smoke-test grid, quick
    python bench/bench_memory.py --du results/small_grid  # only the sizes of a finished run

Runs ``python sweeps/small_grid.py --no-report`` into a fresh temporary storage root
as a child process and polls /proc (bench/common.PeakRSS) for the peak resident set
(VmHWM) of the driver, the trainer actors (ray::Trainer), the Tune trials
(ray::ImplicitFunc) and the coordinator. Then prints the artifact store's size per
kind (models, features, attack_fits) and the Parquet results' size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from common import PeakRSS, machine

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def tree_bytes(path: str) -> tuple[int, int]:
    """(bytes, files) under path, like du --apparent-size."""
    total = files = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(folder, name))
                files += 1
            except OSError:
                pass
    return total, files


def report_sizes(storage: str) -> None:
    artifacts = os.path.join(storage, "artifacts")
    total, files = tree_bytes(artifacts)
    print(f"artifact store {artifacts}: {total / 2**20:.1f} MiB in {files} files")
    for kind in sorted(os.listdir(artifacts)) if os.path.isdir(artifacts) else []:
        size, n = tree_bytes(os.path.join(artifacts, kind))
        entries = len(os.listdir(os.path.join(artifacts, kind)))
        print(f"  {kind:12s} {size / 2**20:7.1f} MiB, {entries} artifacts "
              f"({size / max(1, entries) / 2**10:.0f} KiB each)")
    for table in ("attacks", "models", "divergence", "roc"):
        size, n = tree_bytes(os.path.join(storage, table))
        print(f"  results/{table:10s} {size / 2**20:7.2f} MiB in {n} Parquet files")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--du", metavar="STORAGE", help="only report the sizes under STORAGE")
    args = p.parse_args(argv)
    print(machine())
    if args.du:
        report_sizes(args.du)
        return
    with tempfile.TemporaryDirectory(prefix="mia-bench-memory-") as storage:
        cmd = [sys.executable, "sweeps/small_grid.py", "--storage", storage, "--no-report"]
        if args.smoke_test:
            cmd.append("--smoke-test")
        watchers = {name: PeakRSS(pattern) for name, pattern in (
            ("driver", "sweeps/small_grid.py"), ("trainer actor", "ray::Trainer"),
            ("tune trial", "ray::ImplicitFunc"), ("coordinator", "ray::Coordinator"))}
        for w in watchers.values():
            w.__enter__()
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        finally:
            for w in watchers.values():
                w.__exit__(None, None, None)
        print(f"{' '.join(cmd[1:])}: exit {done.returncode} after "
              f"{time.perf_counter() - start:.0f} s")
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:])
        for line in done.stdout.splitlines():
            if "cells run" in line:
                print("  " + line.strip())
        for name, w in watchers.items():
            peaks = sorted(kib for kib, _ in w.peaks.values())
            print(f"peak RSS {name}: max {w.max_mib():.0f} MiB over {len(peaks)} process(es)"
                  + (f" (each: {', '.join(f'{k / 1024:.0f}' for k in peaks)} MiB)"
                     if len(peaks) > 1 else ""))
        if not args.smoke_test:
            report_sizes(storage)


if __name__ == "__main__":
    main()
