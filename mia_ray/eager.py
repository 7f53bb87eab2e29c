"""The eager backend of :func:`mia_ray.training.train`: one module, a ``torch.optim`` step.

It takes any hook (Opacus wraps the module, optimizer and sampler in ``prepare``; AdvReg
steps its inference model in ``before_step``). Dropout reads the global torch RNG, so a
fit runs in :func:`seeded`, the global stream set to the row's, the caller's restored.

Compiled is a flag (:func:`worth_compiling`): the loss as one ``torch.compile`` graph
whose dropout masks are inputs drawn before each step from the same RNG, in the order
and shapes the eager forward draws them, so it ends where the eager fit would up to
float rounding (``tests/test_compiled_attacks.py``; BENCHMARKS.md, section 7). Only the
full batch shape compiles; a failed compilation says so once and goes on eagerly.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from mia_ray.errors import SpecError
from mia_ray.predict import accuracy, as_tensors
from mia_ray.stacking.layout import Layout

if TYPE_CHECKING:
    from mia_ray.recipe import Recipe, Row

log = logging.getLogger(__name__)

# Training steps from which compiling repays its cost. Measured on the 2-core CPU
# (BENCHMARKS.md, section 7): a compiled SAMIA step saves ~8 ms (31.1 -> 23.5 ms, one
# thread); compiling costs ~45 s on a cold cache, once per machine, and a few seconds
# once torch's on-disk cache holds the graph. 1,000 steps repay a warm compile; the
# small grid's fits (MNIST-1D, K = 1: 2,250 samples, 100 epochs: 1,800 steps) qualify,
# digits cells with K = 5 (4,040 samples: 3,200 steps) too.
MIN_COMPILED_STEPS = 1000
# "1" compiles every fit whose recipe compiles, "0" none; unset: by MIN_COMPILED_STEPS.
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


@contextlib.contextmanager
def seeded(seed: int, device: torch.device, stream: torch.Generator | None = None
           ) -> Iterator[Callable[[], torch.Generator]]:
    """Draw under the torch RNG seeded with ``seed``, or continuing ``stream``; the
    caller's RNG state is restored afterwards.

    Yields a function giving the generator that continues this stream from where the
    draws so far left it: what a network built here hands its :class:`Row` as
    ``dropout``, so that its masks follow its seeded initialisation, alone or stacked.
    """
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if stream is not None and stream.device.type == "cpu":
            torch.random.default_generator.set_state(stream.get_state())
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
                if stream is not None and stream.device.type == "cuda":
                    torch.cuda.set_rng_state(stream.get_state())

        def continuing() -> torch.Generator:
            if cuda:  # a CPU initialisation leaves the CUDA stream where the seed put it
                return torch.Generator(device=device).manual_seed(seed)
            generator = torch.Generator()
            generator.set_state(torch.random.get_rng_state())
            return generator
        yield continuing


class _BatchedTensors(TensorDataset):
    """A TensorDataset that slices a whole batch at once (a hook's sampler's batches)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.tensors[0].device)
        return tuple(t[idx] for t in self.tensors)


def _pass_batch(batch):
    return batch


class CompiledLoss:
    """``cross_entropy(module(x), y)`` for training, compiled for batches of ``batch_size``.

    Calls use ``module``'s own parameters and buffers (BatchNorm statistics update in
    place, as in eager mode), so the optimizer trains ``module`` as usual.
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
                log.warning("torch.compile failed (%s: %s); training this network eagerly",
                            type(error).__name__, str(error).splitlines()[0] if str(error)
                            else "")
                self.compiled = None
        return self._loss(self.params, self.buffers, drops, x, y)


class Eager:
    """One row's model, optimizer and hook; entered for the whole fit (its RNG fork)."""

    def __init__(self, row: Row, recipe: Recipe, device: torch.device) -> None:
        self.row, self.recipe, self.device = row, recipe, device
        self.ids = [0]
        self.sampler: Any = None
        self.model = row.model.to(device)
        self.x, self.y = as_tensors(*row.train, device)
        self.dev = None if row.dev is None else as_tensors(*row.dev, device)
        self.extra: dict[str, Any] = {}

    def __enter__(self) -> Eager:
        device, row, recipe = self.device, self.row, self.recipe
        self._fork = seeded(row.seed, device, row.dropout)
        self._fork.__enter__()
        params = self.model.parameters()
        if recipe.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        else:
            # foreach: the per-tensor arithmetic of the default loop on a CPU, without a
            # Python round trip per parameter tensor (SAMIA has 42 of them).
            optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                        weight_decay=recipe.weight_decay, foreach=True)
        loader = DataLoader(_BatchedTensors(self.x, self.y), batch_size=recipe.batch_size,
                            collate_fn=_pass_batch,
                            generator=torch.Generator().manual_seed(row.seed))
        self.hook = row.hook
        if self.hook is not None:
            self.net, self.optimizer, hooked = self.hook.prepare(self.model, optimizer, loader)
            self.sampler = hooked if hooked is not loader else None
        else:
            self.net, self.optimizer = self.model, optimizer
        self.model.train()
        self.loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        if recipe.compiles and worth_compiling(self.model, recipe.steps(len(self.y))):
            self.loss = CompiledLoss(self.model, self.x, recipe.batch_size)
        elif self.hook is not None:
            self.loss = lambda x, y: self.hook.loss(self.net(x), y, x)
        else:
            self.loss = lambda x, y: F.cross_entropy(self.net(x), y)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hook is not None:
            self.extra = dict(self.hook.metadata())
        self._fork.__exit__(*exc)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def forward_backward(self, rows: list[int], batches: list[torch.Tensor]) -> None:
        index = batches[0].to(self.device)
        self.forward_backward_batch(self.x[index], self.y[index])

    def forward_backward_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.hook is not None:
            self.hook.before_step(self.net, x, y)
            self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(x, y).backward()

    def step(self, rows: list[int]) -> None:
        self.optimizer.step()

    def dev_accuracy(self) -> list[float]:
        # The wrapped net shares its parameters with ``model``; the unwrapped one has
        # the plain state_dict keys that callers save and reload.
        return [accuracy(self.model, *self.dev, device=self.device)]

    def snapshot(self, row: int) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

