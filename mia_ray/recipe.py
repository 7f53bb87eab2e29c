"""How a model trains, as data: the :class:`Recipe` and the :class:`Row` of one model.

Read by the training loop (:func:`mia_ray.training.train`) and its backends; a module
of its own so that the backends import neither the loop nor each other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mia_ray.specs import TrainSpec


@dataclass(frozen=True)
class Recipe:
    """How to train: the data that tells a target fit from an attack-network fit."""

    optimizer: str
    """"adam" (``torch.optim.Adam``, its default single-tensor path on a CPU) or "sgd"
    (``torch.optim.SGD``, foreach)."""
    lr: float
    batch_size: int
    epochs: int
    """The epoch budget (the most epochs, with early stopping)."""
    weight_decay: float = 0.0
    momentum: float = 0.0
    milestones: tuple[int, ...] = ()
    """Epochs from which the learning rate is multiplied by ``gamma`` once more, as
    ``torch.optim.lr_scheduler.MultiStepLR`` steps it."""
    gamma: float = 0.1
    patience: int | None = None
    """Early stopping on dev accuracy (:func:`should_stop`), keeping the best epoch's
    weights; None trains every epoch, keeps the last weights and evaluates nothing."""
    min_batch: int = 1
    """Batches smaller than this are skipped, not counted as a step (a lone sample
    would crash BatchNorm's training statistics)."""
    loader_stream: bool = False
    """Draw from each model's generator as torch's DataLoader over a RandomSampler
    does: a base seed before each epoch's permutation and an unused permutation after
    it, so that target models keep the batch orders they had when a DataLoader drew
    them (``tests/test_training.py`` checks the two against each other)."""
    compiles: bool = False
    """Whether the eager backend may compile the loss of a network that measured
    faster compiled (:func:`mia_ray.eager.worth_compiling`)."""

    def lrs(self) -> list[float]:
        """The learning rate of each epoch, from ``MultiStepLR`` itself."""
        if not self.milestones:
            return [self.lr] * self.epochs
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=self.lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.milestones),
                                                         gamma=self.gamma)
        lrs = []
        for _ in range(self.epochs):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()  # keeps the scheduler from warning about the call order
            scheduler.step()
        return lrs

    def steps(self, n: int) -> int:
        """Optimizer steps of a fit on ``n`` samples."""
        full, rest = divmod(n, self.batch_size)
        return self.epochs * (full + (rest >= self.min_batch and rest > 0))


def target_recipe(spec: TrainSpec) -> Recipe:
    """Target, shadow and reference models: Adam, early stopping on dev accuracy."""
    return Recipe("adam", spec.lr, spec.batch_size, spec.max_epochs,
                  weight_decay=spec.weight_decay, patience=spec.patience, loader_stream=True)


@dataclass
class Row:
    """One model to train and what is its own: data, seed, hook, random stream."""

    model: nn.Module
    train: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]
    dev: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor] | None = None
    seed: int = 0
    """Seeds the batch order and, unless ``dropout`` is given, the dropout masks."""
    hook: Any = None
    """A :class:`mia_ray.training.TrainingHook` (a defense), or None for plain training."""
    dropout: torch.Generator | None = None
    """The generator the model's dropout masks continue from (an attack network's
    stream after its seeded initialisation); default: one seeded with ``seed``."""


def epoch_batches(n: int, generator: torch.Generator, recipe: Recipe) -> list[torch.Tensor]:
    """One epoch's index batches of a model with ``n`` samples: the loop's batch order."""
    if recipe.loader_stream:
        torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(n, generator=generator)
    if recipe.loader_stream:
        torch.randperm(n, generator=generator)
    return [b for b in order.split(recipe.batch_size) if len(b) >= recipe.min_batch]
