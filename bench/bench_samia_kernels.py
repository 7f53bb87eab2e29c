"""SAMIA training-step variants, side by side: which kernels are worth keeping.

    python bench/bench_samia_kernels.py              # generic layer, written out, bf16
    python bench/bench_samia_kernels.py --compile    # also the compiled loss (slow to build)

One SGD step (batch 128, C = 10, one thread) of: the generic
``nn.TransformerEncoderLayer`` network SAMIA used before; the written-out attention
of ``mia_ray.attacks.networks.SAMIANet``; the same under bf16 autocast; and, with
``--compile``, the compiled loss SAMIA fits use at the paper's protocol
(``mia_ray/eager.py``, timed after its compilation), in fp32 and under bf16
autocast, and the ``nn_cls`` MLP's step eager and compiled (why MLPs stay eager). Variants are
alternated over ``--rounds`` rounds, best round kept. The last line is the ratio
generic / written out.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from common import busy_warning, machine
from torch import nn

from mia_ray.attacks.networks import SAMIANet, mlp
from mia_ray.eager import CompiledLoss

C, BATCH = 10, 128


class GenericSAMIA(nn.Module):
    """SAMIA as it was: nn.TransformerEncoder, attention dropout inside SDPA."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3 * C)
        self.embed = nn.Sequential(nn.Linear(3, 64), nn.GELU())
        layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, dropout=0.2,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(C * 64, 64), nn.ReLU(),
                                  nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(x).view(len(x), 3, C).transpose(1, 2)
        return self.head(self.encoder(self.embed(tokens)))


def stepper(net: nn.Module, bf16: bool, compiled: bool = False):
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4,
                          foreach=True)
    x = torch.rand(BATCH, 3 * C if isinstance(net, (SAMIANet, GenericSAMIA)) else 2 * C)
    y = torch.randint(0, 2, (BATCH,))
    loss_of = CompiledLoss(net, x, BATCH) if compiled else (
        lambda x, y: F.cross_entropy(net(x), y))

    def step() -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = loss_of(x, y).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(machine())
    if busy_warning():
        print(busy_warning())
    variants = {"generic encoder layer": stepper(GenericSAMIA().train(), False),
                "written out (kept)": stepper(SAMIANet(C).train(), False),
                "written out, bf16 autocast": stepper(SAMIANet(C).train(), True)}
    if args.compile:
        variants["compiled loss (kept)"] = stepper(SAMIANet(C).train(), False, True)
        variants["compiled loss, bf16 autocast"] = stepper(SAMIANet(C).train(), True, True)
        variants["nn_cls MLP, eager"] = stepper(mlp(2 * C).train(), False)
        variants["nn_cls MLP, compiled loss"] = stepper(mlp(2 * C).train(), False, True)
    best = {name: float("inf") for name in variants}
    for step in variants.values():
        for _ in range(3):
            step()  # warm-up (and compilation)
    for _ in range(args.rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    for name, seconds in best.items():
        print(f"{name:28s} {seconds * 1e3:7.1f} ms per step")
    ratio = best["generic encoder layer"] / best["written out (kept)"]
    print(f"ratio, generic / written out: x{ratio:.2f}")


if __name__ == "__main__":
    main()
