"""Train N learned-attack networks of one shape as one job, each as a lone fit would.

The networks may come from different attack fits (other cells', seeds' or knowledge
settings' shadow sets) or from one fit's attacks padded to a common input width.
Each keeps what :func:`mia_ray.attacks.learned.train_attack_model` gives it alone
(up to float rounding; ``tests/test_stacked_attacks.py``):

* its initialisation (the caller builds it, seeded, the one way attacks build nets);
* its data and its shuffle (``randperm`` on a generator seeded with its seed);
* its dropout masks, drawn from its own generator in the lone fit's order;
* its SGD momentum buffers, on its own rows (:mod:`.optim`);
* the LR schedule, one per job: the networks share the attack spec's epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from mia_ray.stacking.fit import Scratch, train_step
from mia_ray.stacking.forward import Grouped, forward_fn
from mia_ray.stacking.layout import Layout, load_row, stack_models
from mia_ray.stacking.optim import SGD_STATE, sgd_update, step_rows

# A lone trailing sample would crash BatchNorm's training statistics, so a batch
# smaller than this is skipped, in stacked and lone fits alike (and not counted as a step).
MIN_BATCH = 2


def fit_attack_networks(modules: Sequence[nn.Module], inputs: Sequence[torch.Tensor],
                        targets: Sequence[torch.Tensor], *, lrs: Sequence[float],
                        batch_size: int, momentum: float, weight_decay: float,
                        shuffle_seeds: Sequence[int], dropout_generators: Sequence[torch.Generator],
                        device: torch.device, force_vmap: bool = False) -> str:
    """Train ``modules`` in place as 2-class classifiers; leave them in eval mode.

    Args:
        modules: N networks of one type and state layout.
        inputs: N (n_i, d) float32 tensors (sizes may differ, the width may not).
        targets: N (n_i,) int64 tensors, 1 for members.
        lrs: the learning rate of each epoch (the schedule of a lone fit).
        batch_size, momentum, weight_decay: SGD's settings, as in a lone fit.
        shuffle_seeds: N seeds of each network's shuffle generator.
        dropout_generators: N generators in the state a lone fit's global RNG has
            when its training starts (after the network's seeded init).
        device: where the job runs.
        force_vmap: the generic vmap forward even where grouped layers apply.

    Returns:
        "grouped" or "vmap": the forward path the job took.
    """
    n = len(modules)
    if n == 0 or not (len(inputs) == len(targets) == len(shuffle_seeds)
                      == len(dropout_generators) == n):
        raise ValueError(f"need inputs, targets, a shuffle seed and a generator per network; "
                         f"got {n} networks, {len(inputs)} inputs, {len(targets)} targets")
    for m in modules:
        m.to(device)
    layout = Layout(modules[0], inputs[0].to(device))
    template = layout.template.to(device)
    forward = forward_fn(template, force_vmap)
    transposed = getattr(forward, "transposed", frozenset())
    stack = stack_models(modules, layout, device, transposed, SGD_STATE)
    x_all = torch.cat(list(inputs)).to(device)
    y_all = torch.cat(list(targets)).to(device)
    sizes = [len(t) for t in targets]
    offsets = [sum(sizes[:i]) for i in range(n)]
    shuffles = [torch.Generator().manual_seed(s) for s in shuffle_seeds]
    batched_loss = vmap(lambda logits, y, x: F.cross_entropy(logits, y))
    scratch = Scratch(device)
    template.train()
    for lr in lrs:
        update = sgd_update(lr, momentum, weight_decay)
        batches = []
        for i in range(n):
            order = torch.randperm(sizes[i], generator=shuffles[i])
            batches.append([b for b in order.split(batch_size) if len(b) >= MIN_BATCH])
        for t in range(max(len(b) for b in batches)):
            by_size: dict[int, list[int]] = {}
            for row in range(n):
                if t < len(batches[row]):
                    by_size.setdefault(len(batches[row][t]), []).append(row)
            for rows in by_size.values():
                index = torch.stack([batches[r][t] + offsets[r] for r in rows])
                train_step(stack, rows, index, x_all, y_all, layout, dropout_generators,
                           forward, batched_loss, scratch)
            step_rows(stack, sorted(r for rows in by_size.values() for r in rows), update)
    for row, module in enumerate(modules):
        load_row(module, layout, *stack.row_state(row), transposed)
        module.eval()
    return "grouped" if isinstance(forward, Grouped) else "vmap"
