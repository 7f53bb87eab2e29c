"""Optimizer steps on stacked rows through ``torch.optim.Adam`` and ``torch.optim.SGD``.

Each row (one network) keeps its own step count: when only some rows took a batch
this step (a split one batch shorter than the others), those rows are gathered,
updated and written back. Each update is a public ``torch.optim`` optimizer's
``step()`` over the stacked (or gathered) tensors, its per-parameter state set to
the rows' own buffers and step count, so a row's update is the arithmetic, and
rounds as, a lone fit's optimizer on the same gradients. No hand-written update
rule and no private optimizer function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mia_ray.stacking.layout import Stack

ADAM_STATE = ("exp_avg", "exp_avg_sq")
SGD_STATE = ("momentum_buffer",)

# (params, grads, state lists by name, step) -> None, updating params and state in place
Update = Callable[[list[torch.Tensor], list[torch.Tensor], dict[str, list[torch.Tensor]], int],
                  None]


class _Stepper:
    """Runs one public optimizer over the tensors it is given, its state set to ours.

    The optimizer reads and updates the given state buffers in place, so nothing is
    copied back. It is built once and reused while the same tensors come back (every
    step where all rows step together); gathered rows get a fresh one.
    """

    def __init__(self, make: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
                 step_state: bool) -> None:
        self.make = make
        self.step_state = step_state
        self.optimizer: torch.optim.Optimizer | None = None

    def __call__(self, params: list[torch.Tensor], grads: list[torch.Tensor],
                 state: dict[str, list[torch.Tensor]], step: int) -> None:
        held = self.optimizer.param_groups[0]["params"] if self.optimizer else []
        if len(held) != len(params) or any(a is not b for a, b in zip(held, params)):
            self.optimizer = self.make(params)
        optimizer = self.optimizer
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = g
            entry = {name: tensors[i] for name, tensors in state.items()}
            if self.step_state:  # Adam counts the step itself, from the count before it
                entry["step"] = torch.tensor(float(step - 1))
            optimizer.state[p] = entry
        optimizer.step()
        for p in params:
            p.grad = None


def adam_update(lr: float, weight_decay: float) -> Update:
    """torch.optim.Adam's update (L2 weight decay, no amsgrad) on its single-tensor path,
    the one Adam takes for CPU tensors, so stacked and lone fits round alike; its betas
    and eps are torch's defaults, as the eager backend's."""
    return _Stepper(lambda params: torch.optim.Adam(
        params, lr=lr, weight_decay=weight_decay, foreach=False), step_state=True)


def sgd_update(lr: float, momentum: float, weight_decay: float) -> Update:
    """torch.optim.SGD's foreach update with momentum.

    Its momentum buffers start at zero here rather than as a copy of the first
    gradient: ``0 * momentum + grad`` is that copy, bit for bit.
    """
    return _Stepper(lambda params: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True),
        step_state=False)


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
