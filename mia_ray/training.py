"""The one training loop (docs/training.md): targets, shadows, references, attack networks.

:func:`train` owns each model's batch order (one generator per model, so a model alone
and the same model in a stack see the same batches by construction), the learning-rate
schedule, dev evaluation, early stopping, checkpoints, the defenses' hooks, and whether
models stack (:func:`stacks`, decided here once). Backends only do a step's arithmetic:
:class:`mia_ray.eager.Eager` (one module; any hook; compiled as a flag) and
:class:`mia_ray.stacking.Stacked` (N networks as stacked rows).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mia_ray.eager import Eager
from mia_ray.predict import pick_device, refresh_pruned
from mia_ray.recipe import Recipe, Row, epoch_batches, target_recipe
from mia_ray.specs import TrainSpec
from mia_ray.stacking import Stacked


class TrainingHook:
    """Where a defense plugs into :func:`train`. The defaults are plain training."""

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                loader: DataLoader) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        """Called once before the first epoch; may wrap any of the three (e.g. Opacus).

        ``loader`` yields ``(x, y)`` batches on the training device; its ``dataset`` is a
        :class:`~torch.utils.data.TensorDataset` of the whole split and its ``generator``
        the model's batch-order generator. A hook that returns another loader takes over
        the sampling (DP-SGD's Poisson sampling); otherwise the loop's batch order runs.
        """
        return model, optimizer, loader

    def loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The scalar the optimizer minimises for one batch."""
        return F.cross_entropy(logits, y)

    def before_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Runs before each classifier step (e.g. AdvReg's inference-model steps).

        The loop puts the model back in training mode afterwards.
        """

    def metadata(self) -> dict[str, Any]:
        """Numbers to record with the trained model (e.g. a DP epsilon)."""
        return {}


def stacks(hook: TrainingHook | type[TrainingHook] | None) -> bool:
    """Whether models trained with ``hook`` can train stacked: it may change the loss only.

    The one place this is decided: the loop asks it of each model's hook, the planner
    (through :func:`mia_ray.defenses.stackable`) of each defense. Hooks that wrap the
    model or loader (DP-SGD) or add steps of their own (AdvReg) act on one model.
    """
    if hook is None:
        return True
    cls = hook if isinstance(hook, type) else type(hook)
    return cls.prepare is TrainingHook.prepare and cls.before_step is TrainingHook.before_step


def should_stop(epochs_without_gain: int, patience: int) -> bool:
    """The early-stopping rule: stop once MORE than ``patience`` epochs in a row brought
    no dev-accuracy gain, so with patience 5 after the 6th: the authors' ``count >
    early_stop`` (docs/method.md, "Training")."""
    return epochs_without_gain > patience


@dataclass
class TrainReport:
    """What training did to one model."""

    epochs_run: int
    best_epoch: int
    """1-based epoch whose weights were kept."""
    best_dev_acc: float
    seconds: float
    device: str
    extra: dict = field(default_factory=dict)
    """The hook's :meth:`TrainingHook.metadata`; stacked fits add ``stacked`` (N)."""
    checkpoints: dict = field(default_factory=dict)
    """epoch -> the weights after that epoch, for each of ``checkpoint_epochs`` (after
    the last epoch run, if training stopped before it): rewind points of ``imp``."""


def train(rows: Sequence[Row], recipe: Recipe, *, device: torch.device | str | None = None,
          checkpoint_epochs: tuple[int, ...] = (), stack: bool = True,
          force_vmap: bool = False) -> list[TrainReport]:
    """Train every row's model in place to ``recipe``; the one loop of the code base.

    With ``stack`` (and more than one row, every hook :func:`stacks`), the rows train
    together on the stacked backend, else one after another on the eager one; either
    way each model sees its own batches and dropout masks, so the two end at the same
    weights up to float rounding (``tests/test_stacked.py``). Models end in training
    mode, on ``device`` (default :func:`pick_device`), holding the best-dev weights
    (the last weights without early stopping). ``force_vmap`` takes the stacked
    backend's generic vmap forward even where grouped kernels apply.

    Raises:
        ValueError: no rows, an empty or ragged split, or a recipe with early stopping
            and a row without a dev split.
    """
    if not rows:
        raise ValueError("train needs at least one model")
    for i, row in enumerate(rows):
        for part in ("train", "dev") if recipe.patience is not None else ("train",):
            split = getattr(row, part)
            if split is None or len(split[0]) == 0 or len(split[0]) != len(split[1]):
                raise ValueError(f"model {i}: {part} needs equal-length, non-empty x and y")
    device = pick_device() if device is None else torch.device(device)
    if stack and len(rows) > 1 and all(stacks(r.hook) for r in rows):
        return _loop(Stacked(rows, recipe, device, force_vmap), rows, recipe,
                     checkpoint_epochs)
    return [_loop(Eager(row, recipe, device), [row], recipe, checkpoint_epochs)[0]
            for row in rows]


@dataclass
class _Best:
    acc: float = -1.0
    epoch: int = 0
    state: Any = None
    stale: int = 0
    epochs_run: int = 0
    checkpoints: dict = field(default_factory=dict)


def _loop(backend: Eager | Stacked, rows: Sequence[Row], recipe: Recipe,
          checkpoint_epochs: tuple[int, ...]) -> list[TrainReport]:
    start = time.perf_counter()
    generators = [torch.Generator().manual_seed(row.seed) for row in rows]
    sizes = [len(row.train[1]) for row in rows]
    best = [_Best() for _ in rows]
    with backend:
        for epoch, lr in enumerate(recipe.lrs(), start=1):
            backend.set_lr(lr)
            ids = list(backend.ids)
            if backend.sampler is not None:  # a hook took over the sampling (DP-SGD)
                for xb, yb in backend.sampler:
                    backend.forward_backward_batch(xb, yb)
                    backend.step([0])
            else:
                orders = [epoch_batches(sizes[i], generators[i], recipe) for i in ids]
                for t in range(max(len(o) for o in orders)):
                    # Rows whose batches differ in size run as one call per size: no
                    # padding, which would leak into BatchNorm's batch statistics.
                    by_size: dict[int, list[int]] = {}
                    for row, order in enumerate(orders):
                        if t < len(order):
                            by_size.setdefault(len(order[t]), []).append(row)
                    for group in by_size.values():
                        backend.forward_backward(group, [orders[r][t] for r in group])
                    backend.step(sorted(r for group in by_size.values() for r in group))
            for i in ids:
                best[i].epochs_run = epoch
            if recipe.patience is None:
                continue
            keep = []
            for row, (i, acc) in enumerate(zip(ids, backend.dev_accuracy())):
                b = best[i]
                stop = False
                if acc > b.acc:
                    b.acc, b.epoch, b.stale, b.state = acc, epoch, 0, backend.snapshot(row)
                else:
                    b.stale += 1
                    stop = should_stop(b.stale, recipe.patience)
                # imp's rewind point: at that epoch, or at the last epoch a model trains
                # if it stops (or runs out) before it.
                for wanted in checkpoint_epochs:
                    if wanted not in b.checkpoints and (
                            epoch >= wanted or stop or epoch == recipe.epochs):
                        b.checkpoints[wanted] = backend.snapshot(row)
                if not stop:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(ids):
                backend.keep(keep)
        if recipe.patience is None:
            for i in backend.ids:
                best[i].epoch, best[i].acc = best[i].epochs_run, float("nan")
                best[i].state = backend.snapshot(backend.ids.index(i))
    seconds = (time.perf_counter() - start) / len(rows)
    for row, b in zip(rows, best):
        row.model.load_state_dict(b.state)
        refresh_pruned(row.model)
        row.model.train()
    return [TrainReport(epochs_run=b.epochs_run, best_epoch=b.epoch, best_dev_acc=b.acc,
                        seconds=seconds, device=str(backend.device), extra=dict(backend.extra),
                        checkpoints=b.checkpoints) for b in best]


def fit(model: nn.Module, train_split: tuple[np.ndarray, np.ndarray],
        dev: tuple[np.ndarray, np.ndarray], spec: TrainSpec, *, seed: int,
        device: torch.device | None = None, hook: TrainingHook | None = None,
        checkpoint_epochs: tuple[int, ...] = ()) -> TrainReport:
    """One target model through :func:`train` with :func:`target_recipe`: Adam, early
    stopping on ``dev`` accuracy, the best weights kept; the same seed on the same
    device gives the same weights. Works on a model carrying pruning masks: the
    optimizer updates ``*_orig`` and the masks keep pruned weights at zero."""
    return train([Row(model, train_split, dev, seed, hook)], target_recipe(spec),
                 device=device, checkpoint_epochs=checkpoint_epochs)[0]
