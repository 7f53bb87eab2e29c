"""One cell end to end, old code against this code, side by side in one run.

    git worktree add /tmp/old 8c34dda          # the code before stacked attack fits
    python bench/bench_cell.py --old /tmp/old --attack-epochs 100

Runs ``python -m mia_ray.cell`` (digits, small_cnn, l1_unstructured 0.7, knowledge
full, K = 5, the default attacks: four learned ones) once with ``PYTHONPATH`` at
``--old`` and once at this checkout, each on a fresh store, and prints both wall
times: this code twice on one fresh compile cache, so the first run pays SAMIA's
``torch.compile`` (cold) and the second finds it cached (warm, as every later cell
on a machine does). Also ``--stack-attacks 1`` of this code (every attack alone) with
``--reference``. The last line is the ratio old / new with the cold cache.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import busy_warning, machine

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
    p.add_argument("--reference", action="store_true",
                   help="also this code with --stack-attacks 1")
    args = p.parse_args(argv)
    print(machine())
    if busy_warning():
        print(busy_warning())
    with tempfile.TemporaryDirectory() as cache:
        # A fresh compile cache: the first run of this code pays SAMIA's compilation
        # (cold), the second finds it in the cache (warm), as every later cell does.
        old = run_cell(Path(args.old), [], args.attack_epochs, args.threads, cache)
        print(f"old code ({args.old}): {old:.1f} s", flush=True)
        cold = run_cell(HERE, [], args.attack_epochs, args.threads, cache)
        print(f"this code, default, cold compile cache: {cold:.1f} s", flush=True)
        warm = run_cell(HERE, [], args.attack_epochs, args.threads, cache)
        print(f"this code, default, warm compile cache: {warm:.1f} s (x{old / warm:.2f})",
              flush=True)
        if args.reference:
            ref = run_cell(HERE, ["--stack-attacks", "1"], args.attack_epochs, args.threads,
                           cache)
            print(f"this code, --stack-attacks 1: {ref:.1f} s", flush=True)
    print(f"ratio, one cell at --attack-epochs {args.attack_epochs}, old / new (cold "
          f"compile cache): x{old / cold:.2f}")


if __name__ == "__main__":
    main()
