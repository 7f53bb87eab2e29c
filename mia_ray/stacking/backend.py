"""The stacked backend of :func:`mia_ray.training.train`: N networks as stacked rows.

The parameters of N networks of one architecture are stacked along a new leading
dimension and run as batched kernels (:mod:`.forward`): on a CPU this removes N-1 of
every N Python-level steps; on a GPU one large kernel replaces N small ones. The
training loop hands it each step's index batches (each network its own, from its own
generator) and it does the arithmetic; what each network keeps of its own:

* its data: row j's batch comes from its own train split;
* its dropout masks: drawn outside the stacked kernels from its own generator, by
  the same kernel and in the order its forward draws them alone, so on a CPU they
  are the eager backend's masks (on CUDA ``nn.Dropout`` uses the fused kernel: the
  same distribution, not the same bits);
* its BatchNorm running statistics and pruning masks (stacked too);
* its optimizer state and step count (:mod:`.optim`).

A network that stops early leaves the stack (the loop keeps its best weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.func import vmap

from mia_ray.predict import accuracy, as_tensors
from mia_ray.stacking.forward import Grouped, forward_fn
from mia_ray.stacking.layout import Layout, check_same_layout, stack_models, write_row
from mia_ray.stacking.optim import ADAM_STATE, SGD_STATE, adam_update, sgd_update, step_rows

if TYPE_CHECKING:
    from mia_ray.recipe import Recipe, Row


class Scratch:
    """Reusable per-step buffers, so a step allocates no fresh stack-sized tensors.

    A buffer is reused only after the backward pass that read it has finished.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.buffers: dict[object, torch.Tensor] = {}

    def get(self, key: object, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self.buffers[key] = torch.empty(shape, dtype=dtype, device=self.device)
        return buf


class Stacked:
    """N rows' networks stacked; a context for symmetry with the eager backend."""

    def __init__(self, rows: Sequence[Row], recipe: Recipe, device: torch.device,
                 force_vmap: bool = False) -> None:
        self.models = [row.model for row in rows]
        check_same_layout(self.models)
        self.recipe, self.device = recipe, device
        for m in self.models:
            m.to(device)
        train = [as_tensors(*row.train, device) for row in rows]
        self.layout = Layout(self.models[0], train[0][0])
        self.template = self.layout.template.to(device)
        self.forward = forward_fn(self.template, force_vmap)
        self.transposed = getattr(self.forward, "transposed", frozenset())
        adam = recipe.optimizer == "adam"
        self.stack = stack_models(self.models, self.layout, device, self.transposed,
                                  ADAM_STATE if adam else SGD_STATE)
        # All train splits in one tensor: a step's N batches are then one gather.
        self.x_all = torch.cat([x for x, _ in train])
        self.y_all = torch.cat([y for _, y in train])
        self.offsets = [0]
        for _, y in train[:-1]:
            self.offsets.append(self.offsets[-1] + len(y))
        self.devs = [None if r.dev is None else as_tensors(*r.dev, device) for r in rows]
        self.drop_gens = [row.dropout if row.dropout is not None
                          else torch.Generator(device=device).manual_seed(row.seed)
                          for row in rows]
        # A loss-only hook is a function of the defense spec, which a stack shares.
        hook = rows[0].hook
        self.batched_loss = vmap(hook.loss if hook is not None else
                                 (lambda logits, y, x: F.cross_entropy(logits, y)))
        self.scratch = Scratch(device)
        self.extra: dict[str, Any] = {
            **(hook.metadata() if hook is not None else {}), "stacked": len(rows),
            "stacked_path": "grouped" if isinstance(self.forward, Grouped) else "vmap"}
        self.update = None
        self.sampler = None  # the loop draws every batch order
        self.written: dict[int, int] = {}  # model -> the step count its network holds

    @property
    def ids(self) -> list[int]:
        return self.stack.ids

    def __enter__(self) -> Stacked:
        self.template.train()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def set_lr(self, lr: float) -> None:
        r = self.recipe
        if self.update is None or r.optimizer != "adam":
            self.update = (adam_update(lr, r.weight_decay) if r.optimizer == "adam"
                           else sgd_update(lr, r.momentum, r.weight_decay))

    def forward_backward(self, rows: list[int], batches: list[torch.Tensor]) -> None:
        """Forward and backward of the given rows, row ``rows[j]`` on ``batches[j]``.

        Dropout masks are drawn network by network, layer by layer in forward order:
        the order in which a lone network's forward draws them.
        """
        stack, scratch, x_all = self.stack, self.scratch, self.x_all
        index = torch.stack([b + self.offsets[stack.ids[r]] for r, b in zip(rows, batches)])
        index = index.to(self.device)
        n, b = index.shape
        x = torch.index_select(x_all, 0, index.view(-1),
                               out=scratch.get("x", (n * b, *x_all.shape[1:]), x_all.dtype))
        x = x.view(n, b, *x_all.shape[1:])
        y = self.y_all[index]
        masks_of = [(name, scratch.get(("drop", k), (n, b, *shape), x_all.dtype), draw)
                    for k, (name, _, shape, draw) in enumerate(self.layout.dropouts)]
        for j, r in enumerate(rows):
            for _, buf, draw in masks_of:
                draw(buf[j], self.drop_gens[stack.ids[r]])
        drops = {name: buf for name, buf, _ in masks_of}
        if len(rows) == len(stack.ids):
            logits = self.forward(stack.params, stack.buffers, stack.masks, drops, x)
            self.batched_loss(logits, y, x).sum().backward()
            return
        index_rows = torch.as_tensor(rows, device=self.device)
        params = {k: v[index_rows] for k, v in stack.params.items()}
        buffers = {k: v[index_rows] for k, v in stack.buffers.items()}
        masks = {k: v[index_rows] for k, v in stack.masks.items()}
        self.batched_loss(self.forward(params, buffers, masks, drops, x), y, x).sum().backward()
        with torch.no_grad():  # BatchNorm updated the gathered copies of its statistics
            for k, v in buffers.items():
                stack.buffers[k].index_copy_(0, index_rows, v)

    def step(self, rows: list[int]) -> None:
        step_rows(self.stack, rows, self.update)

    def dev_accuracy(self) -> list[float]:
        # Each row's weights in its own network through accuracy(): the lone fit's
        # evaluation, not a stacked copy of it.
        return [accuracy(self._written(row), *self.devs[i], device=self.device)
                for row, i in enumerate(self.stack.ids)]

    def snapshot(self, row: int) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._written(row).state_dict().items()}

    def _written(self, row: int) -> torch.nn.Module:
        """The network of stack row ``row``, holding that row's weights (written once
        per step of the row: a snapshot after the dev evaluation writes nothing)."""
        i = self.stack.ids[row]
        if self.written.get(i) != self.stack.steps[row]:
            write_row(self.models[i], self.layout, self.stack, row, self.transposed)
            self.written[i] = self.stack.steps[row]
        return self.models[i]

    def keep(self, rows: list[int]) -> None:
        self.stack.keep(rows)
