"""Batched sensitivity (features.sensitivity) against one forward per draw (sensitivity_loop).

    python bench/bench_features.py
    python bench/bench_features.py --threads 1,2 --batches 64,512 --repeat 5

Both run in eval and inference mode with the model and the inputs on the same device
(the CPU here; a GPU when there is one), with m = 10 draws and eps = 1e-3 as in
AttackSpec, on the batch sizes extract_features uses (512 by default). Both compute
the unperturbed softmax themselves, so each does the same 11 forward passes' worth of
arithmetic. Prints the seconds per call of each, their ratio, and the largest
difference between their outputs on the same generator state.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import busy_warning, machine

from mia_ray.catalog import DATASETS
from mia_ray.features import _draw_noise, sensitivity, sensitivity_loop
from mia_ray.models import build_model

DRAWS, EPS = 10, 1e-3


def per_call(fn, repeat: int) -> float:
    fn()  # warm-up: allocator and kernel selection
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def compare(arch: str, dataset: str, batch: int, threads: int, repeat: int,
            device: torch.device) -> None:
    torch.set_num_threads(threads)
    model = build_model(arch, dataset, seed=0).to(device).eval()
    x = torch.rand(batch, *DATASETS[dataset].input_shape, device=device)

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    def batched():
        return sensitivity(model, x, draws=DRAWS, eps=EPS, generator=gen())

    def loop():
        return sensitivity_loop(model, x, draws=DRAWS, eps=EPS, generator=gen())

    def synced(fn):
        def run():
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out
        return run

    t_batched = per_call(synced(batched), repeat)
    t_loop = per_call(synced(loop), repeat)
    diff = (batched() - loop()).abs().max().item()
    # Where the time goes, common to both: drawing the m noise tensors, and the
    # forward passes themselves (one of 11*B inputs vs 11 of B).
    big = x.repeat(DRAWS + 1, *[1] * (x.dim() - 1))
    with torch.inference_mode():
        t_noise = per_call(synced(lambda: _draw_noise(x, DRAWS, gen())), repeat)
        t_fwd_one = per_call(synced(lambda: model(big)), repeat)
        t_fwd_many = per_call(synced(lambda: [model(x) for _ in range(DRAWS + 1)]), repeat)
    print(f"{arch}/{dataset} batch={batch} threads={threads} device={device.type}: "
          f"loop {t_loop * 1e3:.1f} ms, batched {t_batched * 1e3:.1f} ms, "
          f"ratio x{t_loop / t_batched:.2f} (per sample: loop {t_loop / batch * 1e6:.0f} us, "
          f"batched {t_batched / batch * 1e6:.0f} us); max |diff| {diff:.1e}; of which noise "
          f"{t_noise * 1e3:.1f} ms, forwards {t_fwd_one * 1e3:.1f} ms as one pass vs "
          f"{t_fwd_many * 1e3:.1f} ms as {DRAWS + 1}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="512", help="batch sizes, e.g. 64,512")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--archs", default="small_cnn,fc", help="small_cnn and/or fc")
    p.add_argument("--resnet", action="store_true",
                   help="also resnet18 on 32x32 inputs (slow on a CPU)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(machine())
    if busy_warning():
        print(busy_warning())
    cases = [c for c in (("small_cnn", "digits"), ("fc", "purchase100"))
             if c[0] in args.archs.split(",")]
    if args.resnet:
        cases.append(("resnet18", "cifar10"))
    for threads in (int(t) for t in args.threads.split(",")):
        for arch, dataset in cases:
            for batch in (int(b) for b in args.batches.split(",")):
                compare(arch, dataset, batch, threads, args.repeat, device)


if __name__ == "__main__":
    main()
