"""Stacked attack fits against one fit at a time, side by side in one run.

    python bench/bench_attack_stacking.py               # 8 fits x 4 learned attacks, 3 epochs
    python bench/bench_attack_stacking.py --epochs 2 --fits 8
    python bench/bench_attack_stacking.py --profile     # where one SAMIA epoch's time goes
    MIA_RAY_COMPILE_ATTACKS=1 python bench/bench_attack_stacking.py --profile  # compiled

Setting: the small grid's attack fit (4,040 pooled shadow samples, C = 10, batch 128,
one torch thread as in a trainer actor), the paper's four learned attacks (nn,
nn_top3, nn_cls, SAMIA). Each of the ``--fits`` fits has its own shadow features.
Every learned attack costs the same per epoch whatever the epoch budget, so the
ratio per epoch at a few epochs is the ratio at the paper's 100.

The stacked side is this code's default at the paper's protocol: a fit of 100 epochs
compiles SAMIA's loss (``mia_ray/eager.py``), so the bench compiles it at
any epoch count (after one warm-up fit that pays the compilation); the other side
fits each attack alone, eagerly.

Three measurements, each both ways in this one run:
1. one fit: its four attacks one by one (``stack=False``, the reference path) against
   its three MLPs in one stacked pass plus SAMIA alone (the default);
2. ``--fits`` fits one by one against all of them as one stacked job (the engine's
   job at ``--stack-attacks`` >= fits): MLPs of every fit together, each SAMIA alone,
   compiled (on a CPU SAMIA does not stack: section 7 of BENCHMARKS.md);
3. per attack kind, to show where the job's time goes.
The last line is the ratio of measurement 2.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from bench_attacks import features
from common import busy_warning, machine

from mia_ray.attacks import Knowledge, fit_attack_sets
from mia_ray.eager import ENV as COMPILE_ENV
from mia_ray.specs import AttackSpec

C = 10
LEARNED = ("nn", "nn_top3", "nn_cls", "samia")


def seconds(sets, stack: bool) -> float:
    """One side's wall time: stacked means this code's default at the paper's 100
    epochs (MLPs stacked, SAMIA's loss compiled); else each attack alone, eager."""
    before = os.environ.get(COMPILE_ENV)
    os.environ[COMPILE_ENV] = "1" if stack else "0"
    try:
        start = time.perf_counter()
        fit_attack_sets(sets, stack=stack)
        return time.perf_counter() - start
    finally:  # leave the caller's setting as it was
        if before is None:
            del os.environ[COMPILE_ENV]
        else:
            os.environ[COMPILE_ENV] = before


def compare(label: str, sets, epochs: int) -> float:
    lone = seconds(sets, stack=False)
    stacked = seconds(sets, stack=True)
    print(f"{label}: one at a time {lone:7.2f} s ({lone / epochs:6.2f} s/epoch), "
          f"stacked {stacked:7.2f} s ({stacked / epochs:6.2f} s/epoch), "
          f"x{lone / stacked:.2f}", flush=True)
    return lone / stacked


def profile_samia(shadow) -> None:
    from torch.profiler import ProfilerActivity, profile

    from mia_ray.attacks import make_attack

    make_attack("samia", num_classes=C).fit(shadow, AttackSpec(epochs=1))  # any compiling
    attack = make_attack("samia", num_classes=C)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attack.fit(shadow, AttackSpec(epochs=1))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fits", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--per-kind", action="store_true", help="also time each attack kind")
    p.add_argument("--profile", action="store_true", help="profile one SAMIA epoch, then stop")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine())
    if busy_warning():
        print(busy_warning())
    shadows = [features(4040, seed=i) for i in range(args.fits)]
    if args.profile:
        profile_samia(shadows[0])
        return
    spec = AttackSpec(names=LEARNED, epochs=args.epochs)
    known = [Knowledge(shadow=s) for s in shadows]
    warm_up = [(known[0], AttackSpec(names=LEARNED, epochs=1), C)]
    print(f"warm-up, including SAMIA's compilation: {seconds(warm_up, stack=True):.1f} s")
    print(f"n={len(shadows[0])} per fit, C={C}, epochs={args.epochs}, threads={args.threads}")
    compare("1 fit, 4 learned attacks", [(known[0], spec, C)], args.epochs)
    if args.per_kind:
        for name in LEARNED:
            one = AttackSpec(names=(name,), epochs=args.epochs)
            compare(f"{args.fits} fits, {name:8s}", [(k, one, C) for k in known], args.epochs)
    ratio = compare(f"{args.fits} fits, 4 learned attacks",
                    [(k, spec, C) for k in known], args.epochs)
    print(f"ratio, {args.fits} attack fits one at a time / stacked: x{ratio:.2f}")


if __name__ == "__main__":
    main()
