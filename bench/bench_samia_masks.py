"""SAMIA's dropout masks drawn inside the compiled graph against outside it, side by side.

    python bench/bench_samia_masks.py --steps 20 --rounds 3

One SGD step of SAMIA (batch 128, C = 10, one thread, as in a trainer actor), alternated
over ``--rounds`` rounds, best round kept, of:

- eager (the fit below 1,000 steps);
- the compiled loss with its masks drawn outside the graph, from the global generator,
  and passed in (``mia_ray/eager.py``, the default at the paper's protocol);
- the compiled loss with torch's own random numbers inside the graph (``rand_like``,
  which inductor lowers to its Philox generator on the CPU);
- the compiled loss with a counter-based generator written as tensor ops inside the
  graph (below: an integer hash of each element's index and a per-step key), which
  inductor fuses and vectorises into the loops that use the masks.

Both in-graph variants draw other masks than an eager fit, so the library would adopt
one only if it were faster, and then only with a check over seeds that the attack's
accuracy does not move; neither was faster on our CPU (BENCHMARKS.md, section 11).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from common import busy_warning, machine
from torch import nn
from torch.func import functional_call

from mia_ray.attacks.networks import Dropout, SAMIANet
from mia_ray.eager import CompiledLoss

C, BATCH = 10, 128


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with full avalanche ("lowbias32", C. Wellons) on int32.

    int32 arithmetic wraps like uint32; an arithmetic shift masked to the bits a
    logical shift keeps is the logical shift.
    """
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * 0x7FEB352D
    h = h ^ ((h >> 15) & 0x1FFFF)
    h = h * -0x7B935975  # 0x846CA68B as int32
    return h ^ ((h >> 16) & 0xFFFF)


def counter_uniform(shape: tuple[int, ...], key: torch.Tensor, stream: int,
                    device: torch.device | None = None) -> torch.Tensor:
    """Uniform float32 numbers in [0, 1) on a 2^-24 grid, one per element of ``shape``.

    Counter-based: element i gets hash(hash(i) xor hash(key + stream)), so every
    element, step (``key``, an int32 scalar) and dropout module (``stream``) has its
    own number, with no state and no order between elements.
    """
    index = torch.arange(int(torch.Size(shape).numel()), dtype=torch.int32, device=device)
    salt = (stream * 0x9E3779B9) & 0xFFFFFFFF  # the golden ratio's multiples, as int32
    salted = _mix32(key ^ (salt - (1 << 32) if salt >= 1 << 31 else salt))
    h = _mix32(_mix32(index.view(shape)) ^ salted)
    return ((h >> 8) & 0xFFFFFF).to(torch.float32) * 2.0 ** -24


class CounterDropout(nn.Module):
    """Inverted dropout whose keep-mask is ``counter_uniform(...) >= p``, keyed by the
    ``key`` buffer the compiled loss supplies at each step (same law as :class:`Dropout`:
    keep with probability 1 - p, scale by 1 / (1 - p))."""

    def __init__(self, p: float, stream: int) -> None:
        super().__init__()
        self.p = p
        self.stream = stream
        self.register_buffer("key", torch.zeros((), dtype=torch.int32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = counter_uniform(tuple(x.shape), self.key, self.stream, x.device) >= self.p
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)


class PhiloxDropout(nn.Module):
    """Dropout from torch's own generator inside the graph (inductor: Philox on the CPU)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.rand_like(x) >= self.p, x * (1.0 / (1.0 - self.p)), 0.0)


def swapped(module: nn.Module, make) -> tuple[nn.Module, list[str]]:
    """A copy of ``module`` with every Dropout replaced by ``make(p, stream)``."""
    template = copy.deepcopy(module)
    paths = [n for n, m in template.named_modules() if isinstance(m, Dropout)]
    for stream, path in enumerate(paths):
        parent, _, name = path.rpartition(".")
        setattr(template.get_submodule(parent), name,
                make(template.get_submodule(path).p, stream))
    return template, paths


def stepper(variant: str):
    net = SAMIANet(C).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4,
                          foreach=True)
    x, y = torch.rand(BATCH, 3 * C), torch.randint(0, 2, (BATCH,))
    params, buffers = dict(net.named_parameters()), dict(net.named_buffers())
    if variant == "eager":
        def loss_of():
            return F.cross_entropy(net(x), y)
    elif variant == "outside":
        compiled = CompiledLoss(net, x, BATCH)

        def loss_of():
            return compiled(x, y)
    elif variant == "philox":
        template, _ = swapped(net, lambda p, stream: PhiloxDropout(p))
        fn = torch.compile(lambda params, buffers, x, y: F.cross_entropy(
            functional_call(template, (params, buffers), (x,)), y), dynamic=False)

        def loss_of():
            return fn(params, buffers, x, y)
    else:
        template, paths = swapped(net, CounterDropout)
        keys = [f"{p}.key" for p in paths]
        fn = torch.compile(lambda params, buffers, drops, x, y: F.cross_entropy(
            functional_call(template, (params, buffers, drops), (x,)), y), dynamic=False)

        def loss_of():
            key = torch.randint(-2**31, 2**31 - 1, (), dtype=torch.int32)
            return fn(params, buffers, dict.fromkeys(keys, key), x, y)

    def step() -> None:
        loss = loss_of()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


VARIANTS = {"eager": "eager",
            "outside": "compiled, masks outside (kept)",
            "philox": "compiled, torch's rand in graph",
            "counter": "compiled, counter hash in graph"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(machine())
    if busy_warning():
        print(busy_warning())
    steps = {name: stepper(name) for name in VARIANTS}
    for step in steps.values():
        for _ in range(3):
            step()  # warm-up and compilation
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
    for name, seconds in best.items():
        print(f"{VARIANTS[name]:34s} {seconds * 1e3:7.1f} ms per step")
    for name in ("philox", "counter"):
        print(f"ratio, masks outside / {VARIANTS[name]}: x{best['outside'] / best[name]:.2f}")


if __name__ == "__main__":
    main()
