"""Train several target/shadow models of one architecture and schedule as one job.

The victim and the K shadows of a build group share an architecture, a
:class:`TrainSpec` and a split size, and differ only in their data, their seed-derived
init and their shuffling. :func:`fit_stacked` trains them together: the parameters of
all N models are stacked along a new leading dimension and run as batched kernels
(:mod:`mia_ray.stacking.forward`). On a CPU this removes N-1 of every N Python-level
steps; on a GPU it fills the device with one large kernel instead of N small ones.

What each model keeps of its own, so that the result is what :func:`training.fit`
would have given model by model (up to float rounding; ``tests/test_stacked.py``):

* its data: every model's batches come from its own train split;
* its batch order: each model gets the very sampler ``fit`` builds, on a generator
  seeded with its seed, so it sees the same index batches in the same order;
* its dropout masks: drawn outside the stacked kernels from a generator seeded with
  its seed, by the same CPU kernel and in the same order as ``fit``'s draws from the
  seeded global RNG, so on the CPU they are the same masks (on CUDA ``fit`` uses the
  fused dropout kernel: the same distribution, not the same bits);
* its BatchNorm running statistics and pruning masks (stacked too);
* its optimizer: Adam on its own rows with its own step count (:mod:`.optim`);
* its early stopping: :func:`training.should_stop` per model; a model that
  stops leaves the stack (its best weights are kept) while the others go on.

Steps where the models' batches differ in size are run as one stacked call per batch
size, so no batch is padded: padding would leak into BatchNorm's batch statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from mia_ray.specs import TrainSpec
from mia_ray.stacking.forward import Grouped, forward_fn
from mia_ray.stacking.layout import Layout, Stack, check_same_layout, load_row, stack_models
from mia_ray.stacking.optim import ADAM_STATE, adam_update, step_rows
from mia_ray.training import TrainingHook, TrainReport, pick_device, should_stop

EVAL_BATCH = 1024  # fit's accuracy() batch size


class _IndexBatches(torch.utils.data.Dataset):
    """Yields the index batch itself: the loader below only exists for its sampling."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.as_tensor(indices, dtype=torch.long)


def _batch_orders(n: int, batch_size: int, seed: int) -> DataLoader:
    # The same sampler, generator and DataLoader as training.fit builds: the loader
    # draws a base seed from the generator at every epoch before the sampler's
    # permutation, so copying only the randperm would drift after the first epoch.
    gen = torch.Generator().manual_seed(seed)
    sampler = BatchSampler(RandomSampler(range(n), generator=gen), batch_size,
                           drop_last=False)
    return DataLoader(_IndexBatches(n), batch_sampler=sampler, collate_fn=lambda b: b,
                      generator=gen)


def supports_hook(hook: TrainingHook | None) -> bool:
    """Whether :func:`fit_stacked` can train with ``hook``: it may change the loss only.

    Hooks that wrap the model or loader (DP-SGD's Opacus engine) or add steps of
    their own (AdvReg's inference model) act on one model at a time; train those
    models one by one with :func:`training.fit`.
    """
    if hook is None:
        return True
    cls = type(hook)
    return (cls.prepare is TrainingHook.prepare
            and cls.before_step is TrainingHook.before_step)


def as_tensors(x: np.ndarray, y: np.ndarray, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device),
            torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device))


def fit_stacked(models: Sequence[nn.Module], trains: Sequence[tuple[np.ndarray, np.ndarray]],
                devs: Sequence[tuple[np.ndarray, np.ndarray]], spec: TrainSpec, *,
                seeds: Sequence[int], device: torch.device | str | None = None,
                hook: TrainingHook | None = None,
                force_vmap: bool = False,
                checkpoint_epochs: tuple[int, ...] = ()) -> list[TrainReport]:
    """Train N models of one architecture together; each as :func:`training.fit` would.

    Args:
        models: N models with the same type and state layout (pruned ones included);
            each is trained in place and moved to ``device``.
        trains: N ``(x, y)`` training splits, one per model (sizes may differ).
        devs: N ``(x, y)`` dev splits for each model's early stopping.
        spec: Optimiser, batch size, epoch budget and patience, shared by all.
        seeds: N seeds; seed i drives model i's batch order and dropout as in ``fit``.
        device: Defaults to :func:`training.pick_device`.
        hook: A defense that only changes the loss (e.g. PPB), applied to every
            model; hooks that wrap the model or add steps (DP-SGD, AdvReg) are refused.
        checkpoint_epochs: Keep each model's weights after these epochs in its report's
            ``checkpoints``, as :func:`training.fit` does.
        force_vmap: Use the generic vmap path even where grouped layers apply (for
            tests and benchmarks; the results agree up to float rounding).

    Returns:
        One :class:`TrainReport` per model, in order. ``seconds`` is the job's wall
        time divided by N (each model's share); ``extra`` holds the hook's metadata
        and ``stacked`` = N.

    Raises:
        ValueError: mismatched lengths, models of different layouts, an empty split,
            a dropout other than ``nn.Dropout``, or a hook that changes the loop.
    """
    n_models = len(models)
    if n_models == 0 or not (len(trains) == len(devs) == len(seeds) == n_models):
        raise ValueError(f"need one train split, dev split and seed per model; got "
                         f"{n_models} models, {len(trains)} trains, {len(devs)} devs, "
                         f"{len(seeds)} seeds")
    for i, ((x, y), (xd, yd)) in enumerate(zip(trains, devs)):
        if len(x) == 0 or len(x) != len(y) or len(xd) == 0 or len(xd) != len(yd):
            raise ValueError(f"model {i}: train and dev need equal-length, non-empty x and y")
    check_same_layout(models)
    if not supports_hook(hook):
        raise ValueError(f"{type(hook).__name__} changes the training loop itself; train "
                         "such models one by one with training.fit")
    device = pick_device() if device is None else torch.device(device)
    start = time.perf_counter()
    for m in models:
        m.to(device)

    train_t = [as_tensors(x, y, device) for x, y in trains]
    layout = Layout(models[0], train_t[0][0])
    template = layout.template.to(device)
    forward = forward_fn(template, force_vmap)
    transposed = getattr(forward, "transposed", frozenset())
    stack = stack_models(models, layout, device, transposed, ADAM_STATE)
    update = adam_update(spec.lr, spec.weight_decay)
    # All train splits in one tensor: a step's N batches are then one gather.
    x_all = torch.cat([x for x, _ in train_t])
    y_all = torch.cat([y for _, y in train_t])
    offsets = np.cumsum([0] + [len(y) for _, y in train_t[:-1]]).tolist()
    dev_x, dev_y, dev_n = _padded_devs(devs, device)
    loaders = [_batch_orders(len(y), spec.batch_size, s) for (_, y), s in zip(train_t, seeds)]
    drop_gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    loss_fn = hook.loss if hook is not None else (lambda logits, y, x: F.cross_entropy(logits, y))
    batched_loss = vmap(loss_fn)
    scratch = Scratch(device)

    best: list[dict[str, Any]] = [{"acc": -1.0, "epoch": 0, "state": None, "stale": 0,
                                   "epochs_run": 0, "checkpoints": {}} for _ in range(n_models)]
    for epoch in range(1, spec.max_epochs + 1):
        orders = [list(loaders[i]) for i in stack.ids]
        template.train()
        for t in range(max(len(o) for o in orders)):
            by_size: dict[int, list[int]] = {}
            for row, order in enumerate(orders):
                if t < len(order):
                    by_size.setdefault(len(order[t]), []).append(row)
            for rows in by_size.values():
                index = torch.stack([orders[r][t] + offsets[stack.ids[r]] for r in rows])
                train_step(stack, rows, index, x_all, y_all, layout, drop_gens, forward,
                           batched_loss, scratch)
            step_rows(stack, sorted(r for rows in by_size.values() for r in rows), update)
        accs = _dev_accuracy(stack, template, forward, dev_x, dev_y, dev_n)
        keep = []
        for row, (model_id, acc) in enumerate(zip(stack.ids, accs)):
            b = best[model_id]
            b["epochs_run"] = epoch
            stop = False
            if acc > b["acc"]:
                b.update(acc=acc, epoch=epoch, stale=0, state=stack.row_state(row))
            else:
                b["stale"] += 1
                stop = should_stop(b["stale"], spec.patience)
            # The rewind point, as training.fit keeps it: at that epoch, or at the
            # last epoch a model trains if it stops (or runs out) before it.
            for wanted in checkpoint_epochs:
                if wanted not in b["checkpoints"] and (
                        epoch >= wanted or stop or epoch == spec.max_epochs):
                    b["checkpoints"][wanted] = stack.row_state(row)
            if not stop:
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(stack.ids):
            stack.keep(keep)

    seconds = (time.perf_counter() - start) / n_models
    extra = {**(hook.metadata() if hook is not None else {}), "stacked": n_models,
             "stacked_path": "grouped" if isinstance(forward, Grouped) else "vmap"}
    reports = []
    for model, b in zip(models, best):
        checkpoints = {}
        for wanted, row_state in b["checkpoints"].items():
            load_row(model, layout, *row_state, transposed)
            checkpoints[wanted] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        load_row(model, layout, *b["state"], transposed)
        model.train()
        reports.append(TrainReport(epochs_run=b["epochs_run"], best_epoch=b["epoch"],
                                   best_dev_acc=b["acc"], seconds=seconds,
                                   device=str(device), extra=dict(extra),
                                   checkpoints=checkpoints))
    return reports


def _padded_devs(devs: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Eval-mode BatchNorm uses running statistics, so padding (unlike in training)
    # changes no real sample's output; padded rows are masked out of the count.
    tensors = [as_tensors(x, y, device) for x, y in devs]
    longest = max(len(y) for _, y in tensors)
    xs = torch.zeros(len(tensors), longest, *tensors[0][0].shape[1:], device=device)
    ys = torch.full((len(tensors), longest), -1, dtype=torch.long, device=device)
    for i, (x, y) in enumerate(tensors):
        xs[i, :len(y)] = x
        ys[i, :len(y)] = y
    counts = torch.tensor([len(y) for _, y in tensors], dtype=torch.float32, device=device)
    return xs, ys, counts


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


def train_step(stack: Stack, rows: list[int], index: torch.Tensor, x_all: torch.Tensor,
               y_all: torch.Tensor, layout: Layout, drop_gens: list[torch.Generator],
               forward: Callable, batched_loss: Callable, scratch: Scratch) -> None:
    """Forward and backward of the given rows, row j on samples ``index[j]`` of x_all.

    Dropout masks are drawn network by network, layer by layer in forward order: the
    order in which a lone fit's forward draws them.
    """
    device = scratch.device
    index = index.to(device)
    n, b = index.shape
    x = torch.index_select(x_all, 0, index.view(-1),
                           out=scratch.get("x", (n * b, *x_all.shape[1:]), x_all.dtype))
    x = x.view(n, b, *x_all.shape[1:])
    y = y_all[index]
    masks_of = [(name, scratch.get(("drop", k), (n, b, *shape), x_all.dtype), draw)
                for k, (name, _, shape, draw) in enumerate(layout.dropouts)]
    for j, r in enumerate(rows):
        for _, buf, draw in masks_of:
            draw(buf[j], drop_gens[stack.ids[r]])
    drops = {name: buf for name, buf, _ in masks_of}
    if len(rows) == len(stack.ids):
        logits = forward(stack.params, stack.buffers, stack.masks, drops, x)
        batched_loss(logits, y, x).sum().backward()
        return
    index_rows = torch.as_tensor(rows, device=device)
    params = {k: v[index_rows] for k, v in stack.params.items()}
    buffers = {k: v[index_rows] for k, v in stack.buffers.items()}
    masks = {k: v[index_rows] for k, v in stack.masks.items()}
    batched_loss(forward(params, buffers, masks, drops, x), y, x).sum().backward()
    with torch.no_grad():  # BatchNorm updated the gathered copies of its statistics
        for k, v in buffers.items():
            stack.buffers[k].index_copy_(0, index_rows, v)


def _dev_accuracy(stack: Stack, template: nn.Module, forward: Callable,
                  dev_x: torch.Tensor, dev_y: torch.Tensor, dev_n: torch.Tensor
                  ) -> list[float]:
    index = torch.as_tensor(stack.ids, device=dev_x.device)
    xs, ys, counts = dev_x[index], dev_y[index], dev_n[index]
    template.eval()
    correct = torch.zeros(len(stack.ids), device=dev_x.device)
    with torch.no_grad():
        for i in range(0, xs.shape[1], EVAL_BATCH):
            logits = forward(stack.params, stack.buffers, stack.masks, {},
                             xs[:, i:i + EVAL_BATCH])
            correct += (logits.argmax(dim=2) == ys[:, i:i + EVAL_BATCH]).sum(dim=1)
    template.train()
    # float32 count / n, the rounding of fit's accuracy() (a float32 mean of 0s and 1s).
    return (correct / counts).tolist()
