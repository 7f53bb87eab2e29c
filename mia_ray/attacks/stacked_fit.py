"""Fit many learned attacks as stacked jobs: networks of one shape train together.

A *job* is a list of :class:`LearnedFit` (an unfitted learned attack, its pooled
shadow features and its spec). They are grouped by network shape and schedule:

* MLP attacks of one class count, whatever their input (``nn`` on C probabilities,
  ``nn_top3`` on 3, ``nn_cls`` on 2C, ...): their first layers are zero-padded to the
  widest input. A zero input column meets a zero weight column, whose gradient,
  weight decay and momentum stay exactly zero, so each network computes what it
  computes alone; the padding is cut off after training. This is what makes one
  cell's fit faster: its MLPs train in one pass over the data.
* SAMIA networks of one class count, from different fits, through vmap. On a CPU that
  measured no faster than fitting them one by one (BENCHMARKS.md, section 7): SAMIA's
  time goes to elementwise kernels whose cost grows with the stack. So SAMIA stacks by
  default on CUDA only, where one kernel for N networks replaces N launches.

Each group trains through :func:`mia_ray.stacking.fit_attack_networks`, every network
ending where :meth:`LearnedAttack.fit` would end it alone, up to float rounding
(``tests/test_stacked_attacks.py``). A group of one takes the lone path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mia_ray.attacks.learned import (
    MOMENTUM,
    WEIGHT_DECAY,
    LearnedAttack,
    MLPAttack,
    epoch_lrs,
    seeded_network,
)
from mia_ray.features import Features
from mia_ray.specs import AttackSpec
from mia_ray.stacking import fit_attack_networks


@dataclass
class LearnedFit:
    """One learned attack to fit on pooled shadow features, with its fit's seed."""

    attack: LearnedAttack
    shadow: Features
    spec: AttackSpec
    seed: int
    """Draws the network's initialisation, dropout masks and shuffle, as in a lone fit."""


def _group_key(job: LearnedFit) -> tuple:
    net = "mlp" if isinstance(job.attack, MLPAttack) else job.attack.name
    spec = job.spec
    return (net, job.attack.num_classes, spec.epochs, spec.lr, spec.batch_size)


def _padded(module: nn.Sequential, width: int) -> nn.Sequential:
    """A copy whose first Linear takes ``width`` inputs, the extra columns zero (no RNG use)."""
    out = copy.deepcopy(module)
    first = out[0]
    extra = width - first.in_features
    if extra:
        w = first.weight.detach()
        first.weight = nn.Parameter(torch.cat([w, w.new_zeros(len(w), extra)], dim=1))
        first.in_features = width
    return out


def _unpadded(trained: nn.Sequential, module: nn.Sequential) -> None:
    """Copy ``trained``'s weights into ``module``, cutting the first layer's padding."""
    state = trained.state_dict()
    state["0.weight"] = state["0.weight"][:, :module[0].in_features]
    module.load_state_dict(state)


def fit_learned(jobs: Sequence[LearnedFit], *, device: torch.device | str | None = None,
                stack: bool = True, stack_vmap: bool | None = None) -> None:
    """Fit every job's attack in place; networks of one shape and schedule train together.

    ``stack=False`` fits each attack alone, one after another (the reference path).
    ``stack_vmap`` stacks the networks that need the vmap path (SAMIA) too; by default
    only on CUDA (see the module docstring).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if stack_vmap is None:
        stack_vmap = device.type == "cuda"
    groups: dict[tuple, list[LearnedFit]] = {}
    for job in jobs:
        together = stack and (stack_vmap or isinstance(job.attack, MLPAttack))
        groups.setdefault(_group_key(job) if together else (id(job),), []).append(job)
    for group in groups.values():
        if len(group) == 1:
            job = group[0]
            job.attack.fit(job.shadow, job.spec, device=device, seed=job.seed)
            continue
        _fit_group(group, device)


def _fit_group(group: list[LearnedFit], device: torch.device) -> None:
    for job in group:
        job.attack._check_features(job.shadow, "shadow")
    built = [seeded_network(job.attack, job.seed, device) for job in group]
    inputs = [np.ascontiguousarray(job.attack.inputs(job.shadow), dtype=np.float32)
              for job in group]
    mlps = isinstance(group[0].attack, MLPAttack)
    width = max(x.shape[1] for x in inputs)
    if mlps:
        inputs = [np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in inputs]
        nets = [_padded(module, width) for module, _ in built]
    else:
        nets = [module for module, _ in built]
    fit_attack_networks(
        nets, [torch.from_numpy(x) for x in inputs],
        [torch.from_numpy(job.shadow.member.astype(np.int64)) for job in group],
        lrs=epoch_lrs(group[0].spec), batch_size=group[0].spec.batch_size,
        momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
        shuffle_seeds=[job.seed for job in group],
        dropout_generators=[gen for _, gen in built], device=device)
    for job, net, (module, _) in zip(group, nets, built):
        if mlps:
            _unpadded(net, module.to(device))
        job.attack.module = module.eval()
