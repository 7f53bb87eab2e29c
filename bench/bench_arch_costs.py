"""CPU seconds per training sample and epoch, per architecture: the dry run's measured costs.

    python bench/bench_arch_costs.py              # every architecture, 1 torch thread
    python bench/bench_arch_costs.py --archs fc,small_cnn --threads 2

Each architecture trains with ``mia_ray.training.fit`` (Adam, batch 128, the model
builder of the sweeps) for ``--epochs`` epochs on random inputs of the shape it meets in
the full grid: fc on purchase100's 600 features and 100 classes, small_cnn on digits'
8 x 8 images, the CIFAR networks on 3 x 32 x 32 images with 10 classes. The cost per
sample-epoch is the time of ``fit`` (training steps and the dev evaluation of each
epoch, as in a build) over epochs x training samples; the first epoch is a warm-up and
is not counted. The figure is the process's CPU time (``time.process_time``), not the
wall time, so a machine shared with other jobs still gives a one-core cost; the wall
time is printed beside it. A trainer actor runs one torch thread per CPU it holds, so
one thread is the default. The printed dict is what ``planner.CPU_SECONDS_PER_SAMPLE_EPOCH`` holds;
BENCHMARKS.md records a run with its machine line.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import busy_warning, machine

from mia_ray.catalog import DATASETS
from mia_ray.models import build_model
from mia_ray.specs import TrainSpec
from mia_ray.training import fit

# (dataset whose input shape the arch meets, training samples): small enough that the
# slowest network finishes in well under a minute on one core.
SETTINGS = {
    "fc": ("purchase100", 4096),
    "small_cnn": ("digits", 2048),
    "resnet18": ("cifar10", 256),
    "vgg16_bn": ("cifar10", 256),
    "densenet121": ("cifar10", 128),
}


def seconds_per_sample_epoch(arch: str, epochs: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per training sample and epoch."""
    dataset, n = SETTINGS[arch]
    info = DATASETS[dataset]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *info.input_shape)).astype(np.float32)
    y = rng.integers(0, info.num_classes, n)
    dev = (x[: n // 4], y[: n // 4])  # the dev split is a quarter of the training size
    model = build_model(arch, dataset, seed=0)
    device = torch.device("cpu")
    fit(model, (x, y), dev, TrainSpec(max_epochs=1), seed=0, device=device)  # warm-up
    # Patience above the epochs: every epoch runs (random labels never improve dev).
    spec = TrainSpec(max_epochs=epochs, patience=epochs + 1)
    cpu, wall = time.process_time(), time.perf_counter()
    report = fit(model, (x, y), dev, spec, seed=0, device=device)
    done = report.epochs_run * n
    return (time.process_time() - cpu) / done, (time.perf_counter() - wall) / done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(SETTINGS),
                   help=f"comma-separated, from {', '.join(SETTINGS)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per architecture")
    args = p.parse_args(argv)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(SETTINGS))
    if unknown:
        p.error(f"--archs: {unknown} not among {list(SETTINGS)}")
    torch.set_num_threads(args.threads)
    print(machine())
    warning = busy_warning()
    if warning:
        print(warning)
    print(f"torch threads: {args.threads}; timed epochs: {args.epochs}")
    costs = {}
    for arch in archs:
        dataset, n = SETTINGS[arch]
        costs[arch], wall = seconds_per_sample_epoch(arch, args.epochs)
        print(f"{arch:<12} on {dataset}-shaped inputs, {n} samples: "
              f"{costs[arch] * 1e3:.3f} ms CPU per sample-epoch "
              f"({wall * 1e3:.3f} ms wall)", flush=True)
    print("CPU_SECONDS_PER_SAMPLE_EPOCH = {"
          + ", ".join(f'"{a}": {c:.2e}' for a, c in costs.items()) + "}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
