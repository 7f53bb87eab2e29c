"""How N networks of one architecture become one stacked state, and back.

A *template* (a copy of the first network, pruning folded into plain parameters, every
dropout swapped for :class:`MaskDropout`) runs the stacked forward; :class:`Layout`
maps its names onto each real network's state, and :class:`Stack` holds the trainable
rows (one per network still training) plus its optimizer state.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune


class MaskDropout(nn.Module):
    """Dropout whose mask is an input (a buffer swapped in by ``functional_call``).

    Random draws inside one stacked kernel come from one generator for all networks;
    drawing each network's masks outside, from its own generator, keeps its stream.
    """

    def __init__(self, p: float, draw) -> None:
        super().__init__()
        self.p = p
        self.draw = draw
        self.register_buffer("drop_mask", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self.drop_mask


def bernoulli_mask(p: float):
    """``nn.Dropout``'s CPU mask: ``empty_like(x).bernoulli_(1 - p) / (1 - p)``, same kernel."""
    def draw(out: torch.Tensor, gen: torch.Generator) -> None:
        if p >= 1.0:  # ATen zeroes without drawing
            out.zero_()
            return
        out.bernoulli_(1 - p, generator=gen).div_(1 - p)
    return draw


def mask_rule(module: nn.Module):
    """How ``module`` draws its dropout mask, or None if it is no dropout.

    ``nn.Dropout`` uses ATen's Bernoulli kernel; a module of this code base that draws
    its own masks says how through ``draw_mask(out, generator)``.
    """
    if type(module) is nn.Dropout:
        return bernoulli_mask(float(module.p))
    if hasattr(module, "draw_mask"):
        return module.draw_mask
    if isinstance(module, nn.modules.dropout._DropoutNd):
        raise ValueError(f"stacked training supports nn.Dropout only, not "
                         f"{type(module).__name__}")
    return None


def pruned_names(module: nn.Module) -> list[str]:
    return [hook._tensor_name for hook in module._forward_pre_hooks.values()
            if isinstance(hook, prune.BasePruningMethod)]


class Layout:
    """How the stateless template's names map onto each real network's state."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        # A pruned module's ``weight`` is a non-leaf (orig * mask) that deepcopy
        # refuses; the memo hands it a detached copy, and prune.remove below
        # recomputes it anyway.
        memo = {id(getattr(m, name)): getattr(m, name).detach()
                for m in model.modules() for name in pruned_names(m)}
        template = copy.deepcopy(model, memo)
        self.source: dict[str, str] = {}  # template parameter -> real state name
        self.masks: dict[str, str] = {}  # template parameter -> real pruning mask
        for path, module in template.named_modules():
            prefix = f"{path}." if path else ""
            for name in pruned_names(module):
                prune.remove(module, name)
                self.masks[prefix + name] = f"{prefix}{name}_mask"
        for name, _ in template.named_parameters():
            self.source[name] = f"{name}_orig" if name in self.masks else name
        self.buffers = [name for name, _ in template.named_buffers()]
        self.dropouts = self._swap_dropouts(template, example)
        self.template = template

    @staticmethod
    def _swap_dropouts(template: nn.Module, example: torch.Tensor) -> list[tuple]:
        """Swap in MaskDropouts; return (buffer name, p, sample shape, draw) in call order."""
        calls: list[tuple[str, tuple[int, ...]]] = []
        handles = []
        for path, module in template.named_modules():
            if mask_rule(module) is not None:
                handles.append(module.register_forward_hook(
                    lambda mod, inp, out, path=path: calls.append((path, tuple(out.shape[1:])))))
        was_training = template.training
        template.eval()
        with torch.no_grad():
            template(example[:1])
        template.train(was_training)
        for h in handles:
            h.remove()
        if len({p for p, _ in calls}) != len(calls):
            raise ValueError("a dropout module runs twice in one forward; stacked training "
                             "draws one mask per module and step")
        out = []
        for path, shape in calls:
            parent_path, _, child = path.rpartition(".")
            parent = template.get_submodule(parent_path)
            original = parent.get_submodule(child)
            p = float(original.p)
            setattr(parent, child, MaskDropout(p, mask_rule(original)))
            if p > 0:  # dropout at p = 0 draws nothing in a lone fit either
                out.append((f"{path}.drop_mask", p, shape, mask_rule(original)))
        return out


def check_same_layout(models: Sequence[nn.Module]) -> None:
    def layout(m: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        return [(k, tuple(v.shape), v.dtype) for k, v in m.state_dict().items()]

    first = layout(models[0])
    for i, m in enumerate(models[1:], start=1):
        if type(m) is not type(models[0]) or layout(m) != first:
            raise ValueError(f"model {i} differs from model 0 in type or state layout; "
                             "stacked training takes networks of one architecture only")


class Stack:
    """The trainable state of the networks still training, one row per network.

    ``state`` holds the optimizer's per-parameter tensors (Adam's moments, SGD's
    momentum), stacked like the parameters; ``steps`` each row's own step count.
    """

    def __init__(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 masks: dict[str, torch.Tensor], ids: list[int],
                 state_names: Sequence[str]) -> None:
        self.params = {k: v.requires_grad_() for k, v in params.items()}
        self.buffers = buffers
        self.masks = masks
        self.ids = ids
        self.state = {s: {k: torch.zeros_like(v) for k, v in params.items()}
                      for s in state_names}
        self.steps = [0] * len(ids)

    def keep(self, rows: list[int]) -> None:
        """Drop the networks not in ``rows`` (they stopped early)."""
        index = torch.as_tensor(rows, device=next(iter(self.params.values())).device)
        with torch.no_grad():
            self.params = {k: v[index].requires_grad_() for k, v in self.params.items()}
            for d in (self.buffers, self.masks, *self.state.values()):
                for k in list(d):
                    d[k] = d[k][index]
        self.ids = [self.ids[r] for r in rows]
        self.steps = [self.steps[r] for r in rows]


def stack_models(models: Sequence[nn.Module], layout: Layout, device: torch.device,
                 transposed: frozenset[str], state_names: Sequence[str]) -> Stack:
    states = [m.state_dict() for m in models]

    def stacked(name: str, stored_as: str) -> torch.Tensor:
        out = torch.stack([s[stored_as].detach() for s in states]).to(device)
        return out.transpose(1, 2).contiguous() if name in transposed else out

    params = {k: stacked(k, src) for k, src in layout.source.items()}
    buffers = {k: stacked(k, k) for k in layout.buffers}
    masks = {k: stacked(k, src) for k, src in layout.masks.items()}
    return Stack(params, buffers, masks, list(range(len(models))), state_names)


def write_row(model: nn.Module, layout: Layout, stack: Stack, row: int,
              transposed: frozenset[str]) -> None:
    """Copy stack row ``row``'s parameters and buffers into its real network, in place.

    The pruning masks are not stack state (they stay fixed); a pruned module's ``weight``
    is recomputed from ``weight_orig`` by its next forward.
    """
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in stack.params.items():
            state[layout.source[name]].copy_(value[row].t() if name in transposed
                                             else value[row])
        for name, value in stack.buffers.items():
            state[name].copy_(value[row])
