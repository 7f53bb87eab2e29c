"""One-shot pruning methods, as masks from ``torch.nn.utils.prune``.

A pruned model keeps ``<name>_orig`` parameters and ``<name>_mask`` buffers, so it
can be fine-tuned with the masks fixed (the pruning pre-hook re-applies them on every
forward) and its state_dict carries the masks. :func:`make_permanent` bakes the zeros
in and leaves a plain state_dict that loads into a fresh :func:`~mia_ray.models.build_model`.

Every method removes exactly ``round(sparsity * n_targets)`` of its targets. Per-layer
methods share that count out over the layers by largest remainder, so each layer
loses the requested fraction up to one target, yet small layers (a 16-filter conv
at 0.9) do not push the total off the request.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune

from mia_ray.catalog import ARCHS, PRUNING_METHODS
from mia_ray.checks import check_prunable
from mia_ray.errors import SpecError
from mia_ray.specs import PruneSpec

PRUNERS: dict[str, type[Pruner]] = {}


def register_pruner(name: str):
    """Class decorator adding a :class:`Pruner` to :data:`PRUNERS` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """
    def add(cls: type[Pruner]) -> type[Pruner]:
        if name in PRUNERS:
            raise ValueError(f"pruning method {name!r} is already registered "
                             f"({PRUNERS[name].__name__})")
        cls.name = name
        PRUNERS[name] = cls
        return cls
    return add


def _check_sparsity(sparsity: object) -> float:
    ok = (isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool)
          and math.isfinite(sparsity) and 0.0 <= sparsity < 1.0)
    if not ok:
        raise SpecError("sparsity", sparsity, "a number in [0.0, 1.0)")
    return float(sparsity)


def apportion(sizes: list[int], sparsity: float, *, keep_one: bool = True) -> list[int]:
    """How many targets to remove from each group so the total is exact.

    Each group loses ``floor`` or ``ceil`` of ``sparsity * size`` (largest fractional
    part first) and the counts sum to ``round(sparsity * sum(sizes))``. With
    ``keep_one`` no group loses its last target, so no layer is cut off entirely.

    >>> apportion([16, 32, 32], 0.9)
    [14, 29, 29]
    """
    caps = [max(n - 1, 0) if keep_one else n for n in sizes]
    exact = [sparsity * n for n in sizes]
    # The epsilon keeps 0.57 * 100 = 56.99999999999999 from flooring to 56.
    counts = [min(math.floor(e + 1e-9), c) for e, c in zip(exact, caps)]
    target = min(math.floor(sparsity * sum(sizes) + 0.5), sum(caps))
    order = sorted(range(len(sizes)), key=lambda i: counts[i] - exact[i])
    while sum(counts) < target:
        for i in order:
            if sum(counts) == target:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
    return counts


def _is_pruned(module: nn.Module, name: str) -> bool:
    return hasattr(module, name + "_mask")


def _removed_entries(module: nn.Module, name: str) -> torch.Tensor:
    """The removed entries of a parameter: from its mask if any, else its zeros."""
    values = getattr(module, name + "_mask") if _is_pruned(module, name) else getattr(module, name)
    return values.detach() == 0


class Pruner:
    """One pruning method: which tensors it targets and how it picks what goes."""

    name: str = ""
    needs: str = ""
    """What a model must contain for this method to apply (for error messages)."""

    def targets(self, model: nn.Module) -> list[nn.Module]:
        """The modules this method prunes, in ``model.modules()`` order."""
        raise NotImplementedError

    def _masks(self, modules: list[nn.Module], sparsity: float) -> None:
        raise NotImplementedError

    def _removed(self, module: nn.Module) -> tuple[int, int]:
        """(removed, total) targets in one module."""
        raise NotImplementedError

    def _checked_targets(self, model: nn.Module) -> list[nn.Module]:
        arch = getattr(model, "arch", None)
        if arch in ARCHS:
            check_prunable(arch, self.name)
        modules = self.targets(model)
        if not modules:
            raise SpecError("method", self.name,
                            f"a method with something to prune in this "
                            f"{type(model).__name__}: {self.needs}")
        return modules

    def apply(self, model: nn.Module, sparsity: float) -> None:
        """Add masks in place removing ``sparsity`` of this method's targets.

        At sparsity 0 the masks are all ones, so every pruned model has the same
        state_dict layout.

        Raises:
            SpecError: bad sparsity, or the model has nothing this method prunes.
            ValueError: the model is already pruned by this method.
        """
        sparsity = _check_sparsity(sparsity)
        modules = self._checked_targets(model)
        if any(_is_pruned(m, "weight") for m in modules):
            raise ValueError(f"{self.name}: the model is already pruned; pruning is one-shot")
        self._masks(modules, sparsity)

    def measured_sparsity(self, model: nn.Module) -> float:
        """Fraction of this method's targets that are removed (masked or zero)."""
        removed = total = 0
        for module in self._checked_targets(model):
            r, t = self._removed(module)
            removed += r
            total += t
        return removed / total


@register_pruner("l1_unstructured")
class L1Unstructured(Pruner):
    """Smallest-|w| weights, the same fraction in every conv and linear layer."""

    needs = "a Conv2d or Linear layer"

    def targets(self, model):
        return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def _masks(self, modules, sparsity):
        counts = apportion([m.weight.numel() for m in modules], sparsity)
        for module, k in zip(modules, counts):
            # An int amount is a count; a float would be read as a fraction.
            prune.l1_unstructured(module, "weight", amount=int(k))

    def _removed(self, module):
        zero = _removed_entries(module, "weight")
        return int(zero.sum().item()), zero.numel()


class _LnStructured(Pruner):
    """Conv output filters of smallest L_n norm, the same fraction per conv layer."""

    norm = 1
    needs = "a Conv2d layer"

    def targets(self, model):
        return [m for m in model.modules() if isinstance(m, nn.Conv2d)]

    def _masks(self, modules, sparsity):
        counts = apportion([m.out_channels for m in modules], sparsity)
        for module, k in zip(modules, counts):
            prune.ln_structured(module, "weight", amount=int(k), n=self.norm, dim=0)
            if module.bias is not None:
                # A filter whose weights are gone but whose bias stays still emits
                # a constant channel; drop the bias with it so the filter is removed.
                kept = module.weight_mask.flatten(1).any(dim=1)
                prune.custom_from_mask(module, "bias", kept.to(module.bias.dtype))

    def _removed(self, module):
        zero = _removed_entries(module, "weight").flatten(1).all(dim=1)
        return int(zero.sum().item()), zero.numel()


@register_pruner("l1_structured")
class L1Structured(_LnStructured):
    norm = 1


@register_pruner("l2_structured")
class L2Structured(_LnStructured):
    norm = 2


@register_pruner("slimming")
class Slimming(Pruner):
    """Network slimming: channels of smallest BatchNorm |gamma|, one global threshold.

    Each BatchNorm layer keeps its largest-|gamma| channel whatever the threshold,
    so the network is never disconnected; the threshold is global over all the
    other channels. Ties are broken by layer order, then channel index.
    """

    needs = "a BatchNorm layer with affine weights"

    def targets(self, model):
        return [m for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]

    def _masks(self, modules, sparsity):
        gammas = [m.weight.detach().abs().float().cpu() for m in modules]
        sizes = [g.numel() for g in gammas]
        protected = torch.zeros(sum(sizes), dtype=torch.bool)
        offset = 0
        for g in gammas:
            protected[offset + int(g.argmax())] = True
            offset += g.numel()
        k = apportion([sum(sizes)], sparsity, keep_one=False)[0]
        k = min(k, sum(sizes) - len(sizes))
        # Protected channels sort last, so the k smallest are all unprotected.
        scores = torch.cat(gammas).masked_fill(protected, math.inf)
        drop = torch.zeros(sum(sizes), dtype=torch.bool)
        drop[torch.argsort(scores, stable=True)[:k]] = True
        for module, keep in zip(modules, torch.split(~drop, sizes)):
            mask = keep.to(device=module.weight.device, dtype=module.weight.dtype)
            prune.custom_from_mask(module, "weight", mask)
            prune.custom_from_mask(module, "bias", mask.clone())

    def _removed(self, module):
        zero = _removed_entries(module, "weight")
        return int(zero.sum().item()), zero.numel()


class _WeightPruner(Pruner):
    """Methods that zero single weights of every conv and linear layer."""

    needs = "a Conv2d or Linear layer"

    def targets(self, model):
        return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def _removed(self, module):
        zero = _removed_entries(module, "weight")
        return int(zero.sum().item()), zero.numel()


@register_pruner("nm_2_4")
class NMSemiStructured(_WeightPruner):
    """N:M semi-structured sparsity (2:4): in each group of M consecutive weights along
    a layer's input dimension, the N largest |w| stay.

    A conv's weight is read as the matrix (out, in x kh x kw) that sparse kernels use,
    so a group runs along one row of it. A row whose length is not a multiple of M ends
    in a shorter group, which also keeps its N largest (all of it when it has N or
    fewer): sparse kernels only accept such layers padded, and a tail weight is never
    removed just to round the count. Sparsity is therefore 0.5 exactly on rows of a
    multiple of 4, and a little below it otherwise (small_cnn's first conv, 9 per row).
    """

    keep, group = 2, 4

    def apply(self, model, sparsity):
        if round(float(sparsity), 6) != self.keep / self.group:
            raise SpecError("sparsity", sparsity,
                            f"{self.keep / self.group} for method {self.name!r}, whose "
                            "sparsity is fixed by its pattern")
        super().apply(model, sparsity)

    def _masks(self, modules, sparsity):
        for module in modules:
            prune.custom_from_mask(module, "weight", nm_mask(module.weight.detach(),
                                                             self.keep, self.group))


def nm_mask(weight: torch.Tensor, keep: int, group: int) -> torch.Tensor:
    """1 where ``weight`` keeps its ``keep`` largest |w| of each ``group`` along a row."""
    rows = weight.reshape(weight.shape[0], -1).abs()
    width = rows.shape[1]
    padded = -(-width // group) * group
    # Padding with -1 (below any |w|) makes a short tail group keep its real weights.
    scores = torch.full((rows.shape[0], padded), -1.0, dtype=rows.dtype, device=rows.device)
    scores[:, :width] = rows
    grouped = scores.reshape(rows.shape[0], -1, group)
    top = grouped.topk(keep, dim=2).indices
    mask = torch.zeros_like(grouped).scatter_(2, top, 1.0)
    return mask.reshape(rows.shape[0], padded)[:, :width].reshape(weight.shape)


@register_pruner("global_unstructured")
class GlobalUnstructured(_WeightPruner):
    """Smallest |w| over all conv and linear layers at once: one threshold, so the
    layers end at uneven sparsities (:func:`layer_sparsities` records them)."""

    def _masks(self, modules, sparsity):
        total = sum(m.weight.numel() for m in modules)
        k = apportion([total], sparsity, keep_one=False)[0]
        prune.global_unstructured([(m, "weight") for m in modules],
                                  pruning_method=prune.L1Unstructured, amount=int(k))


@register_pruner("imp")
class IterativeMagnitude(L1Unstructured):
    """One round of iterative magnitude pruning: per-layer smallest |w| of the previous
    round's weights, up to the round's cumulative sparsity. Rewinding the survivors
    and retraining are the pipeline's (``pipeline._prepare``)."""


def layer_sparsities(model: nn.Module, method: str) -> dict[str, float]:
    """Removed fraction per pruned module, by module name (for the ``models`` table)."""
    pruner = PRUNERS[method]()
    targets = {id(m) for m in pruner._checked_targets(model)}
    out = {}
    for name, module in model.named_modules():
        if id(module) in targets:
            removed, total = pruner._removed(module)
            out[name] = round(removed / total, 6)
    return out


def prune_model(model: nn.Module, spec: PruneSpec) -> None:
    """Apply ``spec.method`` at ``spec.sparsity`` to ``model`` in place."""
    if spec.method not in PRUNERS:
        raise SpecError("method", spec.method, sorted(PRUNERS))
    PRUNERS[spec.method]().apply(model, spec.sparsity)


def measured_sparsity(model: nn.Module, method: str) -> float:
    """Fraction of ``method``'s targets removed in ``model``, masked or made permanent."""
    if method not in PRUNERS:
        raise SpecError("method", method, PRUNING_METHODS)
    return PRUNERS[method]().measured_sparsity(model)


def make_permanent(model: nn.Module) -> None:
    """Bake every mask into its parameter: a plain state_dict with the zeros in it."""
    for module in model.modules():
        names = [hook._tensor_name for hook in module._forward_pre_hooks.values()
                 if isinstance(hook, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)
