"""Stacked training (mia_ray.training.train, stacked backend) against training.fit model by model.

    python bench/bench_stacked.py                 # both benchmarks, 1 and 2 threads
    python bench/bench_stacked.py --quick         # a smaller, faster version
    python bench/bench_stacked.py --repeat 1      # one run of each variant (default 2)

1. fc on Purchase-sized synthetic data: 600 binary features, 100 classes, labels from
   a random linear teacher (so the task is learnable), the paper split of a
   197,324-record pool (44,398 train / 9,866 dev per model), victim + K=5 shadows.
2. small_cnn on digits (the embedded dataset): the paper split of its 1,797 images,
   victim + 5 shadows.

Every model trains a fixed number of epochs (patience = epochs), so both sides do the
same work and the ratio measures throughput. Each configuration prints the sequential
time, the stacked time (grouped layers, and the generic vmap path), their ratios, and
the largest weight difference between the two results as a sanity check.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from common import busy_warning, machine, timed

from mia_ray.data import load_pool
from mia_ray.data.splits import paper_split
from mia_ray.models import build_model
from mia_ray.recipe import Row, target_recipe
from mia_ray.specs import DatasetSpec, TrainSpec
from mia_ray.training import fit, train

K = 5
PURCHASE_POOL = 197_324


def fit_stacked(models, trains, devs, spec, *, seeds, device, force_vmap=False):
    """The loop's stacked backend on N models (what this bench times)."""
    rows = [Row(m, t, d, s) for m, t, d, s in zip(models, trains, devs, seeds)]
    return train(rows, target_recipe(spec), device=device, force_vmap=force_vmap)


def purchase_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary records whose class is the argmax of a random linear teacher plus noise."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 600), dtype=np.float32) < 0.2).astype(np.float32)
    teacher = rng.normal(size=(600, 100)).astype(np.float32)
    noise = rng.gumbel(size=(n, 100)).astype(np.float32)
    return x, np.argmax(x @ teacher + 2.0 * noise, axis=1).astype(np.int64)


def model_splits(x: np.ndarray, y: np.ndarray, seed: int = 0):
    victim, shadows = paper_split(len(y), seed=seed, num_shadows=K)
    parts = (victim, *shadows)
    return ([(x[s.train], y[s.train]) for s in parts], [(x[s.dev], y[s.dev]) for s in parts])


def compare(name: str, arch: str, dataset: str, trains, devs, epochs: int, threads: int,
            repeat: int) -> None:
    torch.set_num_threads(threads)
    spec = TrainSpec(max_epochs=epochs, patience=epochs)
    seeds = list(range(100, 100 + len(trains)))
    models = [build_model(arch, dataset, seed=s) for s in seeds]
    cpu = torch.device("cpu")

    def sequential():
        ms = copy.deepcopy(models)
        for m, tr, dv, s in zip(ms, trains, devs, seeds):
            fit(m, tr, dv, spec, seed=s, device=cpu)
        return ms

    def stacked(force_vmap: bool):
        ms = copy.deepcopy(models)
        fit_stacked(ms, trains, devs, spec, seeds=seeds, device=cpu, force_vmap=force_vmap)
        return ms

    # One short warm-up of each path so one-time costs (allocator, kernels) are not timed.
    warm = TrainSpec(max_epochs=1, patience=1)
    few = [(x[:256], y[:256]) for x, y in trains]
    fit(copy.deepcopy(models[0]), few[0], devs[0], warm, seed=0, device=cpu)
    fit_stacked(copy.deepcopy(models), few, devs, warm, seeds=seeds, device=cpu)

    # Alternate the three, keep each one's fastest run: load from elsewhere on the
    # machine then inflates all three alike instead of whichever ran during it.
    runs: dict[str, list[float]] = {"seq": [], "grp": [], "vmap": []}
    for _ in range(repeat):
        t, ref = timed(sequential)
        runs["seq"].append(t)
        t, grp = timed(lambda: stacked(False))
        runs["grp"].append(t)
        runs["vmap"].append(timed(lambda: stacked(True))[0])
    t_seq, t_grp, t_vmap = (min(runs[k]) for k in ("seq", "grp", "vmap"))
    diff = max((a.state_dict()[k] - b.state_dict()[k]).abs().max().item()
               for a, b in zip(ref, grp) for k in a.state_dict()
               if a.state_dict()[k].is_floating_point())
    print(f"{name} threads={threads} models={len(trains)} epochs={epochs} "
          f"(best of {repeat}): "
          f"sequential {t_seq:.2f} s, stacked grouped {t_grp:.2f} s "
          f"(x{t_seq / t_grp:.2f}), stacked vmap {t_vmap:.2f} s (x{t_seq / t_vmap:.2f}); "
          f"max |weight diff| {diff:.1e}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="torch thread counts to run, e.g. 1,2")
    p.add_argument("--fc-epochs", type=int, default=3)
    p.add_argument("--cnn-epochs", type=int, default=30)
    p.add_argument("--pool", type=int, default=PURCHASE_POOL,
                   help="records in the synthetic Purchase pool")
    p.add_argument("--quick", action="store_true", help="pool of 40,000 and fewer epochs")
    p.add_argument("--only", choices=("fc", "cnn"), help="run one of the two benchmarks")
    p.add_argument("--repeat", type=int, default=2, help="runs of each variant (best kept)")
    args = p.parse_args(argv)
    if args.quick:
        args.pool, args.fc_epochs, args.cnn_epochs = 40_000, 2, 10
    print(machine())
    if busy_warning():
        print(busy_warning())
    threads = [int(t) for t in args.threads.split(",")]
    if args.only != "cnn":
        trains, devs = model_splits(*purchase_like(args.pool))
        print(f"fc: pool {args.pool}, train {[len(y) for _, y in trains]}, "
              f"dev {[len(y) for _, y in devs]}")
        for t in threads:
            compare("fc/purchase-like", "fc", "purchase100", trains, devs, args.fc_epochs, t,
                    args.repeat)
    if args.only != "fc":
        pool = load_pool(DatasetSpec(name="digits"))
        trains, devs = model_splits(pool.x, pool.y)
        print(f"small_cnn: digits, train {[len(y) for _, y in trains]}, "
              f"dev {[len(y) for _, y in devs]}")
        for t in threads:
            compare("small_cnn/digits", "small_cnn", "digits", trains, devs, args.cnn_epochs, t,
                    args.repeat)


if __name__ == "__main__":
    main()
