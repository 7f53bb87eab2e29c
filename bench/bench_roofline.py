"""How far SAMIA training is from this CPU's matmul limit: achieved GFLOP/s vs peak.

    python bench/bench_roofline.py               # one thread, as a trainer actor runs
    python bench/bench_roofline.py --threads 2

In one run: a large fp32 matmul and a large bf16 matmul (the measured peak of this
machine's kernels), then SAMIA training steps at the attack's batch of 128, C = 10,
eager and through the compiled loss (``mia_ray/eager.py``).
SAMIA's FLOPs per step (forward and backward) are counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls only: it counts no elementwise
work), so "achieved" is matmul FLOPs over the whole step's wall time. The last line
is the share of the fp32 peak that SAMIA's compiled training reaches.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import busy_warning, machine
from torch.utils.flop_counter import FlopCounterMode

from mia_ray.attacks.networks import SAMIANet
from mia_ray.eager import CompiledLoss

C, BATCH = 10, 128


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n ** 3 * repeat / (time.perf_counter() - start) / 1e9


def samia_gflops(steps: int, compiled: bool) -> tuple[float, float, float]:
    """(GFLOP per step, seconds per step, achieved GFLOP/s) of SAMIA's SGD steps,
    eager or through the compiled loss that fits at the paper's protocol use."""
    net = SAMIANet(C).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4,
                          foreach=True)
    x, y = torch.rand(BATCH, 3 * C), torch.randint(0, 2, (BATCH,))
    compiled_loss = CompiledLoss(net, x, BATCH) if compiled else None

    def step() -> None:
        if compiled_loss is not None:
            loss = compiled_loss(x, y)
        else:
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()  # warm-up (and compilation)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()  # the same matmuls, counted eagerly
    flops = counter.get_total_flops()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    return flops / 1e9, per_step, flops / per_step / 1e9


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine())
    if busy_warning():
        print(busy_warning())
    fp32 = matmul_gflops(torch.float32)
    bf16 = matmul_gflops(torch.bfloat16)
    print(f"matmul 2048^3, threads={args.threads}: fp32 {fp32:.1f} GFLOP/s, "
          f"bf16 {bf16:.1f} GFLOP/s (x{bf16 / fp32:.2f})")
    for label, compiled in (("eager", False), ("compiled loss (the default)", True)):
        gflop, per_step, achieved = samia_gflops(args.steps, compiled)
        print(f"SAMIA training step, {label}, batch {BATCH}, C={C}: {gflop:.3f} GFLOP "
              f"(matmuls), {per_step * 1e3:.1f} ms, {achieved:.1f} GFLOP/s")
    print(f"ratio, SAMIA training (compiled) / fp32 matmul peak: {achieved / fp32:.3f} "
          f"(x{fp32 / achieved:.1f} below the limit)")


if __name__ == "__main__":
    main()
