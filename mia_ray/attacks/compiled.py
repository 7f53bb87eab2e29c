"""A learned attack's training loss as one compiled graph, its dropout masks drawn outside.

On a CPU, SAMIA's training step is bound by elementwise kernels (BENCHMARKS.md,
section 7): GELU, LayerNorm, softmax over ten classes, the dropout products, each a
separate pass over memory in eager mode. ``torch.compile`` fuses them into a few
loops. Its own random numbers would differ from the eager fit's, so the graph takes
the dropout masks as inputs: they are drawn before each step, from the same RNG, in
the same order and shapes as the eager forward draws them. A compiled fit therefore
sees the masks, the shuffle and the initialisation of the eager fit, and ends where
it would up to float rounding (``tests/test_compiled_attacks.py``).

Compilation costs tens of seconds on a cold cache (seconds once torch's on-disk
cache holds the graph), so a fit compiles only when it is long enough to repay that
(:func:`worth_compiling`). Only the full batch shape is compiled; a trailing short
batch runs the same function eagerly. If compilation fails (no C++ compiler, an
unsupported platform), the fit says so once and goes on eagerly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mia_ray.errors import SpecError
from mia_ray.stacking.layout import Layout

log = logging.getLogger(__name__)

# Training steps from which compiling repays its cost. Measured on the 2-core CPU
# (BENCHMARKS.md, section 7): a compiled SAMIA step saves ~8 ms (31.1 -> 23.5 ms, one
# thread); compiling costs ~45 s on a cold cache, once per machine, and a few seconds
# once torch's on-disk cache holds the graph. 1,000 steps repay a warm compile; the
# small grid's fits (MNIST-1D, K = 1: 2,250 samples, 100 epochs: 1,800 steps) qualify,
# digits cells with K = 5 (4,040 samples: 3,200 steps) too.
MIN_COMPILED_STEPS = 1000
# "1" compiles every learned fit, "0" none; unset: decide by MIN_COMPILED_STEPS.
ENV = "MIA_RAY_COMPILE_ATTACKS"


def compile_setting() -> str:
    """``MIA_RAY_COMPILE_ATTACKS`` ("" when unset); the commands check it before any work."""
    setting = os.environ.get(ENV, "")
    if setting not in ("", "0", "1"):
        raise SpecError(ENV, setting, "1 (always compile), 0 (never) or unset")
    return setting


def worth_compiling(module: nn.Module, steps: int) -> bool:
    """Whether a fit of ``module`` over ``steps`` training steps should compile its loss."""
    setting = compile_setting()
    if setting:
        return setting == "1"
    # A network class says whether it measured faster compiled (SAMIA did; the MLPs,
    # a few small matmuls a step, ran slower): BENCHMARKS.md, section 7.
    return getattr(module, "compiles", False) and steps >= MIN_COMPILED_STEPS


class CompiledLoss:
    """``cross_entropy(module(x), y)`` for training, compiled for batches of ``batch_size``.

    Calls use ``module``'s own parameters and buffers (BatchNorm statistics update in
    place, as in eager mode), so the caller's optimizer trains ``module`` as usual.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, batch_size: int) -> None:
        layout = Layout(module, example[:1])
        self.template = layout.template.to(example.device).train()
        self.dropouts = [(name, shape, draw) for name, _, shape, draw in layout.dropouts]
        self.params = dict(module.named_parameters())
        self.buffers = dict(module.named_buffers())
        self.batch_size = batch_size
        self.compiled: Callable | None = torch.compile(self._loss, dynamic=False)

    def _loss(self, params: dict, buffers: dict, drops: dict, x: torch.Tensor,
              y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(self.template, (params, buffers, drops), (x,))
        return F.cross_entropy(logits, y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # In forward order, from the global RNG: what the eager forward draws.
        drops = {}
        for name, shape, draw in self.dropouts:
            drops[name] = torch.empty((len(x), *shape), dtype=x.dtype, device=x.device)
            draw(drops[name], None)
        if self.compiled is not None and len(x) == self.batch_size:
            try:
                return self.compiled(self.params, self.buffers, drops, x, y)
            except Exception as error:  # noqa: BLE001 (any backend failure: go on eagerly)
                log.warning("torch.compile failed (%s: %s); training this attack eagerly",
                            type(error).__name__, str(error).splitlines()[0] if str(error)
                            else "")
                self.compiled = None
        return self._loss(self.params, self.buffers, drops, x, y)
