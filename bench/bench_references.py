"""64 reference models trained stacked against one by one, with peak memory.

    python bench/bench_references.py                  # 64 references, 10 epochs
    python bench/bench_references.py --references 16 --epochs 3   # quicker
    python bench/bench_references.py --old /tmp/old --references 64 --epochs 5 --rounds 8

The reference models of one digits cell (small CNN, each on its half of the
reference population, ``mia_ray.data.splits.pair_halves``) train through the pipeline's own
entry point, :func:`mia_ray.pipeline.train_models`: once as one stacked job, once one
model after another (what ``--stack-models 1`` does). Each mode runs in a child
process of its own, so its peak resident memory (``ru_maxrss``) is its own; the two
children run one after the other, in the same run. Every model trains a fixed number
of epochs (patience = epochs), so both modes do the same work and the ratio measures
throughput. Prints the wall time of each mode, their ratio, each mode's peak memory,
and the largest difference between the two modes' weights as a sanity check.

``--old PATH`` times the stacked mode instead under the code at PATH and under this
code, ``--rounds`` times, alternating which runs first so that a load drifting during
the run hits both alike, and prints each round's old / new and their geometric mean
with a 95% Student-t interval over the rounds' log ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from common import busy_warning, machine, ratio_interval

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def child(mode: str, references: int, epochs: int, threads: int, out: str) -> None:
    """Train the references in this process and write its timing, memory and weights."""
    import resource
    import time

    import torch

    from mia_ray.knowledge import CellSpec
    from mia_ray.pipeline import train_models
    from mia_ray.specs import AttackSpec, DatasetSpec, TrainSpec

    torch.set_num_threads(threads)
    cell = CellSpec(dataset=DatasetSpec(num_shadows=1), knowledge="original",
                    attacks=AttackSpec(names=("lira_online",)), num_references=references,
                    train=TrainSpec(max_epochs=epochs, patience=epochs))
    specs = list(cell.references())
    start = time.perf_counter()
    if mode == "stacked":
        trained = train_models(specs, [None] * len(specs), device=torch.device("cpu"))
    else:
        trained = [train_models([s], [None], device=torch.device("cpu"))[0] for s in specs]
    seconds = time.perf_counter() - start
    torch.save({i: m.state_dict() for i, (m, _) in enumerate(trained)}, out + ".pt")
    with open(out, "w") as f:
        json.dump({"seconds": seconds,
                   "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "together": trained[0][1]["trained_together"]}, f)


def run_mode(mode: str, args: argparse.Namespace, folder: str, code: str = ROOT) -> dict:
    """Run ``mode`` in a child process importing mia_ray from the checkout ``code``."""
    out = os.path.join(folder, mode + ".json")
    env = {**os.environ, "PYTHONPATH": code + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, __file__, "--child", mode, "--references",
                    str(args.references), "--epochs", str(args.epochs), "--threads",
                    str(args.threads), "--out", out], check=True, env=env)
    with open(out) as f:
        return json.load(f)


def max_weight_difference(folder: str) -> float:
    import torch

    a = torch.load(os.path.join(folder, "stacked.json.pt"), weights_only=True)
    b = torch.load(os.path.join(folder, "alone.json.pt"), weights_only=True)
    return max(float((a[i][k].float() - b[i][k].float()).abs().max())
               for i in a for k in a[i])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--references", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--old", help="checkout of older code: time the stacked mode old vs new")
    p.add_argument("--rounds", type=int, default=3, help="old/new pairs with --old")
    p.add_argument("--child", choices=("stacked", "alone"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.references, args.epochs, args.threads, args.out)
        return 0
    print(machine())
    if busy_warning():
        print(busy_warning())
    print(f"{args.references} reference models, small_cnn on digits, {args.epochs} epochs "
          f"each, {args.threads} thread(s)", flush=True)
    if args.old:
        ratios = []
        with tempfile.TemporaryDirectory() as folder:
            for r in range(1, args.rounds + 1):
                order = [("old", args.old), ("new", ROOT)]
                seconds = {side: run_mode("stacked", args, folder, code)["seconds"]
                           for side, code in (order if r % 2 else order[::-1])}
                ratios.append(seconds["old"] / seconds["new"])
                print(f"round {r}: old {seconds['old']:.2f} s  new {seconds['new']:.2f} s  "
                      f"old / new x{ratios[-1]:.3f}", flush=True)
        print(f"stacked, old / new over {args.rounds} rounds: {ratio_interval(ratios)}")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        alone = run_mode("alone", args, folder)
        stacked = run_mode("stacked", args, folder)
        diff = max_weight_difference(folder)
    print(f"one by one: {alone['seconds']:.1f} s, peak {alone['peak_mib']:.0f} MiB")
    print(f"stacked ({stacked['together']} per job): {stacked['seconds']:.1f} s, "
          f"peak {stacked['peak_mib']:.0f} MiB")
    print(f"ratio (one by one / stacked): x{alone['seconds'] / stacked['seconds']:.2f}; "
          f"largest weight difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
