"""GPU throughput check: ResNet-18 builds on CIFAR-10-sized synthetic data.

    python bench/gpu_check.py                 # about 5 minutes on one H100/H200-class GPU
    python bench/gpu_check.py --epochs 1      # quicker
    python bench/gpu_check.py --dry-run       # tiny, on the CPU: checks the script runs
    bash bench/gpu_check.sh                   # the same, with a time limit and a log file

Not run on the development machine (it has no GPU). What it measures, each printed
with the exact numbers:

1. One original build (ResNet-18 trained from scratch) and one pruned build
   (l1_unstructured at 0.7, fine-tuned with PPB lambda = 4) on a synthetic pool of
   60,000 32x32 RGB images split the paper's way (13,500 train / 3,000 dev), in fp32
   and under bf16 autocast: seconds per epoch, and models per hour at the epochs a
   build is expected to run (planner.EXPECTED_EPOCH_SHARE of 100 / 50).
2. One trainer actor holding the whole GPU against four actors at 0.25 GPU each
   (Ray fractional GPUs, as GridSpec.trainer.gpus = 0.25 sets up): models per hour.
3. Stacked training (mia_ray.training.train, stacked backend, vmap path) of the victim and five
   shadows against training them one by one.
4. Batched sensitivity against one forward per draw, ResNet-18, batch 512.
5. Stacked attack fits (:func:`mia_ray.attacks.fit_attack_sets`): the four learned
   attacks of 1, 8 and 64 fits (4,040 shadow samples each, C = 10) per job, against the
   same fits one attack at a time: attack fits per hour at the paper's 100 epochs.
6. 2:4 semi-structured inference: an MLP of 4096-wide linear layers pruned with
   ``nm_2_4`` (mia_ray.pruning), fp16, batch 4096: the dense masked model against its
   weights converted with ``torch.sparse.to_sparse_semi_structured`` (sparse tensor
   cores, Ampere or newer): milliseconds per forward and the largest output difference.
   The repository's own small models (digits' CNN, the fc nets) have layers too narrow
   for the sparse kernels, so the part times layers of a deployable width.

Epochs are fixed (patience = epochs) so every variant does the same work.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import time

import numpy as np
import torch
from common import machine

from mia_ray.data.splits import paper_split
from mia_ray.defenses import PPBHook
from mia_ray.features import sensitivity, sensitivity_loop
from mia_ray.models import build_model
from mia_ray.planner import EXPECTED_EPOCH_SHARE
from mia_ray.pruning import prune_model
from mia_ray.recipe import Row, target_recipe
from mia_ray.specs import PruneSpec, TrainSpec
from mia_ray.training import fit, train

POOL = 60_000
DEVICE = torch.device("cuda")
ORIGINAL_EPOCHS = 100 * EXPECTED_EPOCH_SHARE
FINETUNE_EPOCHS = 50 * EXPECTED_EPOCH_SHARE


def fit_stacked(models, trains, devs, spec, *, seeds, device, force_vmap=False):
    """The loop's stacked backend on N models (what this bench times)."""
    rows = [Row(m, t, d, s) for m, t, d, s in zip(models, trains, devs, seeds)]
    return train(rows, target_recipe(spec), device=device, force_vmap=force_vmap)


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def synthetic_splits(pool: int, k: int = 5):
    """Learnable 32x32 RGB data: class = argmax of a random linear teacher."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(pool, 3, 32, 32)).astype(np.float32)
    teacher = rng.normal(size=(3 * 32 * 32, 10)).astype(np.float32)
    y = np.argmax(x.reshape(pool, -1) @ teacher, axis=1).astype(np.int64)
    victim, shadows = paper_split(pool, seed=0, num_shadows=k)
    parts = (victim, *shadows)
    return [(x[s.train], y[s.train]) for s in parts], [(x[s.dev], y[s.dev]) for s in parts]


def precision(bf16: bool):
    return (torch.autocast(DEVICE.type, dtype=torch.bfloat16) if bf16
            else contextlib.nullcontext())


def build(train, dev, epochs: int, *, pruned: bool, bf16: bool, seed: int = 0) -> float:
    """Seconds per epoch of one original or pruned ResNet-18 build on the GPU."""
    spec = TrainSpec(max_epochs=epochs, patience=epochs)
    model = build_model("resnet18", "cifar10", seed=seed)
    hook = None
    if pruned:
        prune_model(model, PruneSpec("l1_unstructured", 0.7))
        hook = PPBHook(4.0)
    sync()
    start = time.perf_counter()
    with precision(bf16):
        fit(model, train, dev, spec, seed=seed, device=DEVICE, hook=hook)
    sync()
    return (time.perf_counter() - start) / epochs


def single_builds(trains, devs, epochs: int) -> None:
    x, y = trains[0]
    build((x[:512], y[:512]), devs[0], 1, pruned=False, bf16=False)  # warm-up: cuDNN autotune
    for bf16 in (False, True):
        per_epoch = {p: build(trains[0], devs[0], epochs, pruned=p, bf16=bf16)
                     for p in (False, True)}
        name = "bf16 autocast" if bf16 else "fp32"
        print(f"[1] {name}: original {per_epoch[False]:.2f} s/epoch "
              f"(~{3600 / (per_epoch[False] * ORIGINAL_EPOCHS):.0f} models/h at "
              f"{ORIGINAL_EPOCHS:.0f} epochs), pruned+PPB {per_epoch[True]:.2f} s/epoch "
              f"(~{3600 / (per_epoch[True] * FINETUNE_EPOCHS):.0f} models/h at "
              f"{FINETUNE_EPOCHS:.0f} epochs)", flush=True)


def actors(trains, devs, epochs: int, bf16: bool) -> None:
    import ray

    # On a dry run the one "GPU" is a logical resource: the scheduling runs, on the CPU.
    # Four CPUs at least, so four one-CPU actors are placed even on a small machine.
    cores = os.cpu_count() or 1
    ray.init(num_gpus=1, num_cpus=max(4, cores), include_dashboard=False, log_to_driver=False)
    train_ref, dev_ref = ray.put(trains[0]), ray.put(devs[0])

    class Builder:
        def __init__(self, threads: int):
            # Actors share the host's cores: one intra-op pool each, not one per core each.
            torch.set_num_threads(threads)

        def build(self, train, dev, seed):
            return build(train, dev, epochs, pruned=False, bf16=bf16, seed=seed)

    try:
        for n_actors, share in ((1, 1.0), (4, 0.25)):
            remote = ray.remote(Builder).options(num_gpus=share, num_cpus=1)
            pool = [remote.remote(max(1, cores // n_actors)) for _ in range(n_actors)]
            ray.get([a.build.remote(train_ref, dev_ref, 0) for a in pool])  # warm-up
            builds = 4
            start = time.perf_counter()
            ray.get([pool[i % n_actors].build.remote(train_ref, dev_ref, i)
                     for i in range(builds)])
            wall = time.perf_counter() - start
            per_model_epochs = wall / builds / epochs  # wall seconds per build-epoch
            print(f"[2] {n_actors} actor(s) at {share} GPU, {builds} builds x {epochs} epochs"
                  f"{' bf16' if bf16 else ''}: {wall:.1f} s, ~"
                  f"{3600 / (per_model_epochs * ORIGINAL_EPOCHS):.0f} original models/h",
                  flush=True)
            for a in pool:
                ray.kill(a)
    finally:
        ray.shutdown()


def stacked(trains, devs, epochs: int) -> None:
    spec = TrainSpec(max_epochs=epochs, patience=epochs)
    models = [build_model("resnet18", "cifar10", seed=i) for i in range(len(trains))]
    seeds = list(range(len(trains)))
    sync()
    start = time.perf_counter()
    for m, tr, dv, s in zip(copy.deepcopy(models), trains, devs, seeds):
        fit(m, tr, dv, spec, seed=s, device=DEVICE)
    sync()
    t_seq = time.perf_counter() - start
    start = time.perf_counter()
    fit_stacked(copy.deepcopy(models), trains, devs, spec, seeds=seeds, device=DEVICE)
    sync()
    t_stack = time.perf_counter() - start
    print(f"[3] {len(trains)} ResNet-18s x {epochs} epochs: one by one {t_seq:.1f} s, "
          f"stacked {t_stack:.1f} s, x{t_seq / t_stack:.2f}", flush=True)


def sensitivity_check(batch: int) -> None:
    device = DEVICE
    model = build_model("resnet18", "cifar10", seed=0).to(device).eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    times = {}
    for name, fn in (("batched", sensitivity), ("loop", sensitivity_loop)):
        gen = torch.Generator(device=device).manual_seed(0)
        fn(model, x, draws=10, eps=1e-3, generator=gen)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(5):
            fn(model, x, draws=10, eps=1e-3, generator=gen)
        sync()
        times[name] = (time.perf_counter() - start) / 5
    print(f"[4] sensitivity, ResNet-18, batch {batch}, 10 draws: "
          f"loop {times['loop'] * 1e3:.1f} ms, batched {times['batched'] * 1e3:.1f} ms, "
          f"x{times['loop'] / times['batched']:.2f}",
          flush=True)


def attack_fits(sizes: tuple[int, ...], n: int, epochs: int) -> None:
    from bench_attacks import features

    from mia_ray.attacks import Knowledge, fit_attack_sets
    from mia_ray.specs import AttackSpec

    spec = AttackSpec(names=("nn", "nn_top3", "nn_cls", "samia"), epochs=epochs)
    fit_attack_sets([(Knowledge(shadow=features(n, 0)), spec, 10)], device=DEVICE)  # warm-up
    for count in sizes:
        sets = [(Knowledge(shadow=features(n, seed)), spec, 10) for seed in range(count)]
        line = []
        for label, stack in (("one at a time", False), ("stacked", True)):
            if not stack and count > 8:
                continue  # 64 lone fits would take the whole time budget
            sync()
            start = time.perf_counter()
            fit_attack_sets(sets, device=DEVICE, stack=stack)
            sync()
            per_hour = count / (time.perf_counter() - start) * 3600 * epochs / 100
            line.append(f"{label} {per_hour:.0f} fits/h")
        print(f"[5] {count} attack fits per job, 100-epoch protocol (from {epochs} epochs): "
              + ", ".join(line), flush=True)


def semi_structured(width: int, batch: int, layers: int = 4) -> None:
    from torch import nn

    from mia_ray.pruning import make_permanent

    dtype = torch.float16 if DEVICE.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(layers)
                            for m in (nn.Linear(width, width), nn.ReLU())])
    prune_model(model, PruneSpec("nm_2_4", 0.5))
    make_permanent(model)
    model = model.to(DEVICE, dtype).eval()
    x = torch.randn(batch, width, device=DEVICE, dtype=dtype)

    def per_forward(net) -> float:
        with torch.inference_mode():
            net(x)  # warm-up
            sync()
            start = time.perf_counter()
            for _ in range(20):
                net(x)
            sync()
        return (time.perf_counter() - start) / 20

    dense = per_forward(model)
    if DEVICE.type != "cuda":
        print(f"[6] 2:4 inference, {layers} x Linear({width}, {width}), batch {batch}: dense "
              f"{dense * 1e3:.2f} ms; sparse kernels need CUDA (dry run)", flush=True)
        return
    from torch.sparse import to_sparse_semi_structured

    sparse = copy.deepcopy(model)
    for m in sparse.modules():
        if isinstance(m, nn.Linear):
            m.weight = nn.Parameter(to_sparse_semi_structured(m.weight.detach()),
                                    requires_grad=False)
    with torch.inference_mode():
        diff = (model(x) - sparse(x)).abs().max().item()
    t_sparse = per_forward(sparse)
    print(f"[6] 2:4 inference, {layers} x Linear({width}, {width}), fp16, batch {batch}: "
          f"dense {dense * 1e3:.2f} ms, semi-structured {t_sparse * 1e3:.2f} ms, "
          f"x{dense / t_sparse:.2f}; max |dense - sparse| {diff:.2e}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed build")
    p.add_argument("--skip", default="", help="comma list of parts to skip: 1,2,3,4,5,6")
    p.add_argument("--dry-run", action="store_true",
                   help="a tiny pool on the CPU, to check the script itself")
    args = p.parse_args(argv)
    global DEVICE
    pool, batch, fit_sizes, fit_n, width = POOL, 512, (1, 8, 64), 4040, 4096
    if args.dry_run:
        DEVICE, pool, batch, args.epochs = torch.device("cpu"), 600, 8, 1
        fit_sizes, fit_n, width = (1, 2), 200, 64
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA GPU; none is visible (try --dry-run)")
    print(machine(), flush=True)
    skip = set(args.skip.split(","))
    trains, devs = synthetic_splits(pool)
    if "1" not in skip:
        single_builds(trains, devs, args.epochs)
    if "2" not in skip:
        actors(trains, devs, args.epochs, bf16=False)
    if "3" not in skip:
        stacked(trains, devs, args.epochs)
    if "4" not in skip:
        sensitivity_check(batch)
    if "5" not in skip:
        attack_fits(fit_sizes, fit_n, args.epochs)
    if "6" not in skip:
        semi_structured(width, batch=8 * batch)


if __name__ == "__main__":
    main()
