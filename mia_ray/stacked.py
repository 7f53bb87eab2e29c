"""Train several models of one architecture and schedule as one vectorised job.

The victim and the K shadows of a stage share an architecture, a :class:`TrainSpec`
and a split size, and differ only in their data, their seed-derived init and their
shuffling. :func:`fit_stacked` trains them together: the parameters of all N models
are stacked along a new leading dimension and one ``torch.func.vmap`` over
``functional_call`` runs the N forward and backward passes as batched kernels (a
linear layer becomes one ``bmm``, a convolution one grouped convolution). On a CPU
this removes N-1 of every N Python-level steps (autograd bookkeeping, optimizer
step, batch assembly); on a GPU it fills the device with one large kernel instead
of N small ones.

What each model keeps of its own, so that the result is what :func:`training.fit`
would have given model by model (up to float rounding; ``tests/test_stacked.py``):

* its data: every model's batches come from its own train split;
* its batch order: each model gets the very sampler ``fit`` builds, on a generator
  seeded with its seed, so it sees the same index batches in the same order;
* its dropout masks: drawn outside ``vmap`` from a generator seeded with its seed, by
  the same CPU kernel and in the same order as ``fit``'s dropout draws from the
  seeded global RNG, so on the CPU they are the same masks. (On CUDA ``fit`` uses the
  fused dropout kernel, whose masks differ: the same distribution, not the same bits.)
* its BatchNorm running statistics: the buffers are stacked too, and the batched
  batch-norm updates each model's own slice;
* its pruning masks: a pruned model trains ``weight_orig`` with ``weight = orig * mask``
  as ``fit`` does through the pruning pre-hook;
* its optimizer: Adam is applied here to the stacked tensors with each model's own
  step count, with the same elementwise operations as ``torch.optim.Adam``;
* its early stopping: dev accuracy is tracked per model; a model that stops leaves
  the stack (its best weights are kept) while the others go on.

Split sizes may differ by a sample or two (the victim half of an odd pool is one
smaller than the shadow half). Steps where the models' batches differ in size are
run as one vmap per batch size, so no batch is padded: padding would leak into
BatchNorm's batch statistics.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils import prune
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from mia_ray.specs import STACKABLE_DEFENSES, ModelSpec, TrainSpec, arch_info, canonical_json
from mia_ray.training import (
    TrainingHook,
    TrainReport,
    _refresh_pruned,
    pick_device,
    should_stop,
)

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which fit uses
ADAM_EPS = 1e-8
EVAL_BATCH = 1024  # fit's accuracy() batch size


class _MaskDropout(nn.Module):
    """Dropout whose mask is an input (a buffer swapped in by ``functional_call``).

    Random draws inside ``vmap`` come from one generator for all models; drawing the
    masks outside, per model, is what keeps each model's dropout stream its own.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("drop_mask", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self.drop_mask


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


def _pruned_names(module: nn.Module) -> list[str]:
    return [hook._tensor_name for hook in module._forward_pre_hooks.values()
            if isinstance(hook, prune.BasePruningMethod)]


class _Layout:
    """How the stateless template's names map onto each real model's state.

    The template is a copy of the first model with pruning folded into plain
    parameters and every ``nn.Dropout`` replaced by :class:`_MaskDropout`.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        # A pruned module's ``weight`` is a non-leaf (orig * mask) that deepcopy
        # refuses; the memo hands it a detached copy, and prune.remove below
        # recomputes it anyway.
        memo = {id(getattr(m, name)): getattr(m, name).detach()
                for m in model.modules() for name in _pruned_names(m)}
        template = copy.deepcopy(model, memo)
        self.source: dict[str, str] = {}  # template parameter -> real state name
        self.masks: dict[str, str] = {}  # template parameter -> real pruning mask
        for path, module in template.named_modules():
            prefix = f"{path}." if path else ""
            for name in _pruned_names(module):
                prune.remove(module, name)
                self.masks[prefix + name] = f"{prefix}{name}_mask"
        for name, _ in template.named_parameters():
            self.source[name] = f"{name}_orig" if name in self.masks else name
        self.buffers = [name for name, _ in template.named_buffers()]
        self.dropouts = self._swap_dropouts(template, example)
        self.template = template

    @staticmethod
    def _swap_dropouts(template: nn.Module, example: torch.Tensor
                       ) -> list[tuple[str, float, tuple[int, ...]]]:
        """Replace nn.Dropout modules; return (buffer name, p, per-sample shape) in call order."""
        calls: list[tuple[str, tuple[int, ...]]] = []
        handles = []
        for path, module in template.named_modules():
            if type(module) is nn.Dropout:
                handles.append(module.register_forward_hook(
                    lambda mod, inp, out, path=path: calls.append((path, tuple(out.shape[1:])))))
            elif isinstance(module, nn.modules.dropout._DropoutNd):
                raise ValueError(f"fit_stacked supports nn.Dropout only, not "
                                 f"{type(module).__name__} at {path!r}")
        was_training = template.training
        template.eval()
        with torch.no_grad():
            template(example[:1])
        template.train(was_training)
        for h in handles:
            h.remove()
        if len({p for p, _ in calls}) != len(calls):
            raise ValueError("a dropout module runs twice in one forward; fit_stacked "
                             "draws one mask per module and step")
        out = []
        for path, shape in calls:
            parent_path, _, child = path.rpartition(".")
            parent = template.get_submodule(parent_path)
            p = float(parent.get_submodule(child).p)
            setattr(parent, child, _MaskDropout(p))
            if p > 0:  # dropout at p = 0 draws nothing in fit either
                out.append((f"{path}.drop_mask", p, shape))
        return out


def _check_same_layout(models: Sequence[nn.Module]) -> None:
    def layout(m: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        return [(k, tuple(v.shape), v.dtype) for k, v in m.state_dict().items()]

    first = layout(models[0])
    for i, m in enumerate(models[1:], start=1):
        if type(m) is not type(models[0]) or layout(m) != first:
            raise ValueError(f"model {i} differs from model 0 in type or state layout; "
                             "fit_stacked trains models of one architecture only")


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


def _check_hook(hook: TrainingHook | None) -> None:
    if not supports_hook(hook):
        raise ValueError(f"{type(hook).__name__} changes the training loop itself; train "
                         "such models one by one with training.fit")


class _Stack:
    """The trainable state of the models still training, one row per model."""

    def __init__(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor], ids: list[int]) -> None:
        self.params = {k: v.requires_grad_() for k, v in params.items()}
        self.buffers = buffers
        self.masks = masks
        self.ids = ids
        self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        self.steps = [0] * len(ids)

    def keep(self, rows: list[int]) -> None:
        """Drop the models not in ``rows`` (they stopped early)."""
        index = torch.as_tensor(rows, device=next(iter(self.params.values())).device)
        with torch.no_grad():
            self.params = {k: v[index].requires_grad_() for k, v in self.params.items()}
            for d in (self.buffers, self.masks, self.exp_avg, self.exp_avg_sq):
                for k in list(d):
                    d[k] = d[k][index]
        self.ids = [self.ids[r] for r in rows]
        self.steps = [self.steps[r] for r in rows]

    def row_state(self, row: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return ({k: v[row].detach().clone() for k, v in self.params.items()},
                {k: v[row].clone() for k, v in self.buffers.items()})

    def adam_step(self, rows: list[int], spec: TrainSpec) -> None:
        """torch.optim.Adam's update (L2 weight decay, no amsgrad) on the given rows."""
        for r in rows:
            self.steps[r] += 1
        by_step: dict[int, list[int]] = {}
        for r in rows:
            by_step.setdefault(self.steps[r], []).append(r)
        with torch.no_grad():
            for step, group in by_step.items():
                whole = len(group) == len(self.ids)
                index = None if whole else torch.as_tensor(
                    group, device=next(iter(self.params.values())).device)
                self._adam_rows(index, step, spec)
        for p in self.params.values():
            p.grad = None

    def _adam_rows(self, index: torch.Tensor | None, step: int, spec: TrainSpec) -> None:
        names = list(self.params)
        if index is None:
            params = [self.params[k] for k in names]
            grads = [self.params[k].grad for k in names]
            avg = [self.exp_avg[k] for k in names]
            avg_sq = [self.exp_avg_sq[k] for k in names]
        else:
            params = [self.params[k][index] for k in names]
            grads = [self.params[k].grad[index] for k in names]
            avg = [self.exp_avg[k][index] for k in names]
            avg_sq = [self.exp_avg_sq[k][index] for k in names]
        beta1, beta2 = ADAM_BETAS
        # The operations and float scalars of torch.optim.Adam's single-tensor path,
        # so a row's update rounds exactly as fit's optimizer would on the same grads.
        # The gradients are dropped after this step, so they are written over in
        # place: the weight-decayed gradient, then the denominator. Fresh tensors of
        # a stack's size cost more than the arithmetic (page faults on every step).
        if spec.weight_decay != 0:
            torch._foreach_add_(grads, params, alpha=spec.weight_decay)
        torch._foreach_lerp_(avg, grads, 1 - beta1)
        torch._foreach_mul_(avg_sq, beta2)
        torch._foreach_addcmul_(avg_sq, grads, grads, value=1 - beta2)
        step_size = spec.lr / (1 - beta1 ** step)
        denom = grads
        for d, v in zip(denom, avg_sq):
            torch.sqrt(v, out=d)
        torch._foreach_div_(denom, (1 - beta2 ** step) ** 0.5)
        torch._foreach_add_(denom, ADAM_EPS)
        torch._foreach_addcdiv_(params, avg, denom, value=-step_size)
        if index is not None:
            for k, p, a, s in zip(names, params, avg, avg_sq):
                self.params[k].index_copy_(0, index, p)
                self.exp_avg[k].index_copy_(0, index, a)
                self.exp_avg_sq[k].index_copy_(0, index, s)


def _as_tensors(x: np.ndarray, y: np.ndarray, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device),
            torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device))


def fit_stacked(models: Sequence[nn.Module], trains: Sequence[tuple[np.ndarray, np.ndarray]],
                devs: Sequence[tuple[np.ndarray, np.ndarray]], spec: TrainSpec, *,
                seeds: Sequence[int], device: torch.device | str | None = None,
                hook: TrainingHook | None = None,
                force_vmap: bool = False) -> list[TrainReport]:
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
    _check_same_layout(models)
    _check_hook(hook)
    device = pick_device() if device is None else torch.device(device)
    start = time.perf_counter()
    for m in models:
        m.to(device)

    train_t = [_as_tensors(x, y, device) for x, y in trains]
    layout = _Layout(models[0], train_t[0][0])
    template = layout.template.to(device)
    forward = _forward_fn(template, force_vmap)
    transposed = getattr(forward, "transposed", frozenset())
    stack = _stack_models(models, layout, device, transposed)
    # All train splits in one tensor: a step's N batches are then one gather.
    x_all = torch.cat([x for x, _ in train_t])
    y_all = torch.cat([y for _, y in train_t])
    offsets = np.cumsum([0] + [len(y) for _, y in train_t[:-1]]).tolist()
    dev_x, dev_y, dev_n = _padded_devs(devs, device)
    loaders = [_batch_orders(len(y), spec.batch_size, s) for (_, y), s in zip(train_t, seeds)]
    drop_gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    loss_fn = hook.loss if hook is not None else (lambda logits, y, x: F.cross_entropy(logits, y))
    batched_loss = vmap(loss_fn)
    scratch = _Scratch(device)

    best: list[dict[str, Any]] = [{"acc": -1.0, "epoch": 0, "state": None, "stale": 0,
                                   "epochs_run": 0} for _ in range(n_models)]
    for epoch in range(1, spec.max_epochs + 1):
        orders = [list(loaders[i]) for i in stack.ids]
        template.train()
        for t in range(max(len(o) for o in orders)):
            by_size: dict[int, list[int]] = {}
            for row, order in enumerate(orders):
                if t < len(order):
                    by_size.setdefault(len(order[t]), []).append(row)
            for rows in by_size.values():
                _train_step(stack, rows, [orders[r][t] for r in rows], offsets, x_all, y_all,
                            layout, drop_gens, forward, batched_loss, scratch)
            stack.adam_step(sorted(r for rows in by_size.values() for r in rows), spec)
        accs = _dev_accuracy(stack, template, forward, dev_x, dev_y, dev_n)
        keep = []
        for row, (model_id, acc) in enumerate(zip(stack.ids, accs)):
            b = best[model_id]
            b["epochs_run"] = epoch
            if acc > b["acc"]:
                b.update(acc=acc, epoch=epoch, stale=0, state=stack.row_state(row))
                keep.append(row)
                continue
            b["stale"] += 1
            if not should_stop(b["stale"], spec.patience):
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(stack.ids):
            stack.keep(keep)

    seconds = (time.perf_counter() - start) / n_models
    extra = {**(hook.metadata() if hook is not None else {}), "stacked": n_models,
             "stacked_path": "grouped" if isinstance(forward, _Grouped) else "vmap"}
    reports = []
    for model, b in zip(models, best):
        _load_best(model, layout, *b["state"], transposed)
        reports.append(TrainReport(epochs_run=b["epochs_run"], best_epoch=b["epoch"],
                                   best_dev_acc=b["acc"], seconds=seconds,
                                   device=str(device), extra=dict(extra)))
    return reports


def _forward_fn(template: nn.Module, force_vmap: bool = False) -> Callable:
    """``(params, buffers, masks, drops, x) -> (N, B, C)`` logits of the stacked models.

    Sequential nets of plain layers (the fc and small_cnn architectures) run as
    grouped layers; anything else (ResNet's residual blocks, ...) through vmap.
    """
    if not force_vmap and _Grouped.applies(template):
        return _Grouped(template)

    def one(params, buffers, masks, drops, x):
        weights = {k: p * masks[k] if k in masks else p for k, p in params.items()}
        return functional_call(template, (weights, buffers, drops), (x,))

    return vmap(one)


class _Grouped:
    """Run N stacked copies of a plain nn.Sequential with grouped kernels, no vmap.

    Vector activations are laid out (N, B, F) and a linear layer is one ``baddbmm``
    on weights stacked as (N, in, out).
    Image activations are laid out (B, N*C, H, W): a convolution is one convolution
    with ``groups=N``, BatchNorm is the native kernel over N*C channels (each channel
    still normalised over its own model's batch), max-pooling needs no relayout.
    vmap reaches the same kernels but moves the model dimension between layouts at
    BatchNorm and pooling, which costs copies (measured in BENCHMARKS.md).
    """

    _IMAGE = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
    _ANY = (nn.ReLU, nn.Identity)
    _FLAT = (nn.Linear, _MaskDropout)

    @classmethod
    def applies(cls, template: nn.Module) -> bool:
        if type(template) is not nn.Sequential:
            return False
        image = None  # unknown until the first layer that fixes it
        for module in template:
            if isinstance(module, cls._IMAGE):
                if image is False or (isinstance(module, nn.Conv2d)
                                      and module.padding_mode != "zeros"):
                    return False
                if isinstance(module, nn.BatchNorm2d) and module.momentum is None:
                    return False  # a cumulative average needs per-model batch counts
                image = True
            elif isinstance(module, nn.Flatten):
                if (module.start_dim, module.end_dim) != (1, -1):
                    return False
                image = False
            elif isinstance(module, cls._FLAT):
                if image:
                    return False
                image = False
            elif not isinstance(module, cls._ANY):
                return False
        return image is not True  # the logits must come out of a linear layer

    def __init__(self, template: nn.Sequential) -> None:
        self.template = template
        self.names = [name for name, _ in template.named_children()]
        # Linear weights are stacked as (N, in, out): bmm's gradient for its second
        # operand comes out in that layout, and a (N, out, in) parameter would make
        # autograd copy every weight gradient into its strides (measured: the largest
        # cost of a stacked fc step before this).
        self.transposed = frozenset(f"{name}.weight" for name, m in zip(self.names, template)
                                    if isinstance(m, nn.Linear))

    def __call__(self, params, buffers, masks, drops, x: torch.Tensor) -> torch.Tensor:
        def weight(name: str) -> torch.Tensor:
            p = params[name]
            return p * masks[name] if name in masks else p

        def optional(name: str) -> torch.Tensor | None:
            return weight(name) if name in params else None

        n, b = x.shape[:2]
        image = False
        for name, module in zip(self.names, self.template):
            if isinstance(module, self._IMAGE) and not image:
                # (N, B, C, H, W) -> (B, N*C, H, W)
                x = x.transpose(0, 1).reshape(b, n * x.shape[2], *x.shape[3:])
                image = True
            if isinstance(module, nn.Conv2d):
                w = weight(f"{name}.weight")
                bias = optional(f"{name}.bias")
                x = F.conv2d(x, w.reshape(-1, *w.shape[2:]),
                             None if bias is None else bias.reshape(-1), module.stride,
                             module.padding, module.dilation, n * module.groups)
            elif isinstance(module, nn.BatchNorm2d):
                x = self._batch_norm(name, module, params, buffers, masks, x)
            elif isinstance(module, nn.MaxPool2d):
                x = F.max_pool2d(x, module.kernel_size, module.stride, module.padding,
                                 module.dilation, module.ceil_mode)
            elif isinstance(module, nn.Flatten):
                # (B, N*C, H, W) -> (N, B, C*H*W): each model's features in its own order.
                x = x.reshape(b, n, -1).transpose(0, 1) if image else x.reshape(n, b, -1)
                image = False
            elif isinstance(module, nn.Linear):
                w = weight(f"{name}.weight")
                bias = optional(f"{name}.bias")
                x = torch.bmm(x, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w)
            elif isinstance(module, nn.ReLU):
                x = F.relu(x)
            elif isinstance(module, _MaskDropout):
                if module.training and module.p > 0:
                    x = x * drops[f"{name}.drop_mask"]
        if image:
            raise ValueError("the network ends on an image activation")
        return x

    @staticmethod
    def _batch_norm(name, module, params, buffers, masks, x):
        def flat(d, key):
            t = d.get(f"{name}.{key}")
            if t is not None and f"{name}.{key}" in masks:
                t = t * masks[f"{name}.{key}"]
            return None if t is None else t.reshape(-1)

        mean, var = flat(buffers, "running_mean"), flat(buffers, "running_var")
        use_batch = module.training or mean is None
        if module.training and mean is not None:
            buffers[f"{name}.num_batches_tracked"].add_(1)
        # reshape of the contiguous (N, C) buffers is a view: the kernel's running
        # statistics update lands in the stack.
        return F.batch_norm(x, mean, var, flat(params, "weight"), flat(params, "bias"),
                            use_batch, module.momentum, module.eps)


def _stack_models(models: Sequence[nn.Module], layout: _Layout, device: torch.device,
                  transposed: frozenset[str]) -> _Stack:
    states = [m.state_dict() for m in models]

    def stacked(name: str, stored_as: str) -> torch.Tensor:
        out = torch.stack([s[stored_as].detach() for s in states]).to(device)
        return out.transpose(1, 2).contiguous() if name in transposed else out

    params = {k: stacked(k, src) for k, src in layout.source.items()}
    buffers = {k: stacked(k, k) for k in layout.buffers}
    masks = {k: stacked(k, src) for k, src in layout.masks.items()}
    return _Stack(params, buffers, masks, list(range(len(models))))


def _padded_devs(devs: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Eval-mode BatchNorm uses running statistics, so padding (unlike in training)
    # changes no real sample's output; padded rows are masked out of the count.
    tensors = [_as_tensors(x, y, device) for x, y in devs]
    longest = max(len(y) for _, y in tensors)
    xs = torch.zeros(len(tensors), longest, *tensors[0][0].shape[1:], device=device)
    ys = torch.full((len(tensors), longest), -1, dtype=torch.long, device=device)
    for i, (x, y) in enumerate(tensors):
        xs[i, :len(y)] = x
        ys[i, :len(y)] = y
    counts = torch.tensor([len(y) for _, y in tensors], dtype=torch.float32, device=device)
    return xs, ys, counts


class _Scratch:
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


def _train_step(stack: _Stack, rows: list[int], batches: list[torch.Tensor],
                offsets: list[int], x_all: torch.Tensor, y_all: torch.Tensor,
                layout: _Layout, drop_gens: list[torch.Generator], forward: Callable,
                batched_loss: Callable, scratch: _Scratch) -> None:
    """Forward and backward of the given rows on one same-sized batch each."""
    device = scratch.device
    index = torch.stack([b + offsets[stack.ids[r]] for b, r in zip(batches, rows)]).to(device)
    n, b = index.shape
    x = torch.index_select(x_all, 0, index.view(-1),
                           out=scratch.get("x", (n * b, *x_all.shape[1:]), x_all.dtype))
    x = x.view(n, b, *x_all.shape[1:])
    y = y_all[index]
    drops: dict[str, torch.Tensor] = {}
    masks_of = [(k, name, p, scratch.get(("drop", k), (n, b, *shape), x_all.dtype))
                for k, (name, p, shape) in enumerate(layout.dropouts)]
    # Model by model, layer by layer in forward order: the order in which fit's
    # forward draws its masks from the global RNG.
    for j, r in enumerate(rows):
        for _, _, p, buf in masks_of:
            _dropout_mask(buf[j], p, drop_gens[stack.ids[r]])
    drops = {name: buf for _, name, _, buf in masks_of}
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


def _dropout_mask(out: torch.Tensor, p: float, gen: torch.Generator) -> None:
    # ATen's CPU dropout: noise = empty_like(x).bernoulli_(1 - p); noise /= 1 - p,
    # drawn here into a slice of a reused buffer (same kernel, same element order).
    # p == 1 zeroes without drawing; p == 0 never gets here (see _Layout).
    if p >= 1.0:
        out.zero_()
        return
    out.bernoulli_(1 - p, generator=gen).div_(1 - p)


def _dev_accuracy(stack: _Stack, template: nn.Module, forward: Callable,
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


def _load_best(model: nn.Module, layout: _Layout, params: dict[str, torch.Tensor],
               buffers: dict[str, torch.Tensor], transposed: frozenset[str]) -> None:
    state = model.state_dict()
    for name, value in params.items():
        state[layout.source[name]] = value.t() if name in transposed else value
    state.update(buffers)
    model.load_state_dict(state)
    _refresh_pruned(model)
    model.train()


def stackable(spec: ModelSpec) -> bool:
    """Whether ``spec`` trains together with its stage: its architecture stacks
    (``ArchInfo.stacks``) and its defense changes only the loss."""
    return arch_info(spec.arch).stacks and (spec.prune is None
                                        or spec.defense.name in STACKABLE_DEFENSES)


def stack_groups(specs: Sequence[ModelSpec], limit: int | None = None) -> list[list[ModelSpec]]:
    """Group model specs into the jobs that train them: one :func:`fit_stacked` call each.

    Two specs stack when they differ only in role and index: same dataset, arch,
    schedules, pruning and defense (the victim and shadows of a stage, or the
    shadows of one knowledge setting), and both are :func:`stackable`; any other
    spec is a job of its own. A spec listed twice is kept once; groups keep the
    input order. ``limit`` splits a group into jobs of at most that many models
    (memory on a shared GPU grows with the stack; the engine's default is
    :data:`~mia_ray.specs.STACK_LIMIT`).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    groups: dict[str, dict[str, ModelSpec]] = {}
    for spec in specs:
        if stackable(spec):
            shared = spec.key_dict()
            shared.pop("role")
            shared.pop("index")
            group = canonical_json(shared)
        else:
            group = spec.key()
        groups.setdefault(group, {}).setdefault(spec.key(), spec)
    out = []
    for group in groups.values():
        members = list(group.values())
        size = limit or len(members)
        out += [members[i:i + size] for i in range(0, len(members), size)]
    return out
