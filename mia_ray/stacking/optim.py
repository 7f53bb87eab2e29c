"""Optimizer steps on stacked rows through ``torch.optim``'s functional Adam and SGD.

Each row (one network) keeps its own step count: when only some rows took a batch
this step (a split one batch shorter than the others), those rows are gathered,
updated and written back. The functional optimizers are the very code
``torch.optim.Adam`` and ``torch.optim.SGD`` run, so a row's update rounds as a lone
fit's optimizer would on the same gradients. No hand-written update rule: the
functional API takes the step count as a tensor per parameter, which is all the
per-row bookkeeping needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from mia_ray.stacking.layout import Stack

ADAM_STATE = ("exp_avg", "exp_avg_sq")
SGD_STATE = ("momentum",)
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which training.fit uses
ADAM_EPS = 1e-8

# (params, grads, state lists by name, step) -> None, updating in place
Update = Callable[[list[torch.Tensor], list[torch.Tensor], dict[str, list[torch.Tensor]], int],
                  None]


def adam_update(lr: float, weight_decay: float) -> Update:
    """torch.optim.Adam's update (L2 weight decay, no amsgrad; its single-tensor path,
    which Adam takes for CPU tensors)."""
    def update(params, grads, state, step):
        adam(params, grads, state["exp_avg"], state["exp_avg_sq"], [],
             [torch.tensor(float(step - 1)) for _ in params], foreach=False, amsgrad=False,
             beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], lr=lr, weight_decay=weight_decay,
             eps=ADAM_EPS, maximize=False)
    return update


def sgd_update(lr: float, momentum: float, weight_decay: float) -> Update:
    """torch.optim.SGD's foreach update with momentum.

    Its momentum buffers start at zero here rather than as a copy of the first
    gradient: ``0 * momentum + grad`` is that copy, bit for bit.
    """
    def update(params, grads, state, step):
        sgd(params, grads, state["momentum"], foreach=True, weight_decay=weight_decay,
            momentum=momentum, lr=lr, dampening=0.0, nesterov=False, maximize=False)
    return update


def step_rows(stack: Stack, rows: list[int], update: Update) -> None:
    """Apply ``update`` to the given rows, each at its own step count; drop the grads."""
    for r in rows:
        stack.steps[r] += 1
    by_step: dict[int, list[int]] = {}
    for r in rows:
        by_step.setdefault(stack.steps[r], []).append(r)
    names = list(stack.params)
    with torch.no_grad():
        for step, group in by_step.items():
            if len(group) == len(stack.ids):
                update([stack.params[k] for k in names], [stack.params[k].grad for k in names],
                       {s: [d[k] for k in names] for s, d in stack.state.items()}, step)
                continue
            index = torch.as_tensor(group, device=next(iter(stack.params.values())).device)
            params = [stack.params[k][index] for k in names]
            state = {s: [d[k][index] for k in names] for s, d in stack.state.items()}
            update(params, [stack.params[k].grad[index] for k in names], state, step)
            for i, k in enumerate(names):
                stack.params[k].index_copy_(0, index, params[i])
                for s, d in stack.state.items():
                    d[k].index_copy_(0, index, state[s][i])
    for p in stack.params.values():
        p.grad = None
