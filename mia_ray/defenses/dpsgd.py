"""DP-SGD (Abadi et al. 2016) while the pruned model is fine-tuned, through Opacus.

:class:`DPSGDHook` hands the model, optimizer and loader of :func:`~mia_ray.training.train`
to :meth:`opacus.PrivacyEngine.make_private`: per-sample gradients are clipped to
``clip_norm`` in L2 norm, Gaussian noise of standard deviation ``sigma * clip_norm``
is added to their sum, and batches are drawn by Poisson sampling with rate
1 / (batches per epoch), as Opacus does by default. The epsilon reported is the RDP
accountant's (Mironov 2017) at the spec's delta, after every step that ran.

What the epsilon covers: the fine-tuning steps only. The parent model was trained
without noise on the same members (the paper applies DP-SGD to fine-tuning only), so
the released model has no end-to-end guarantee; epsilon measures what fine-tuning
adds. Early stopping picks the best-dev epoch, but all epochs that ran count,
because the choice looked at every checkpoint.

Two things in the models Opacus cannot train as they arrive:

**BatchNorm is frozen, not replaced by GroupNorm.** Training-mode BatchNorm mixes the
samples of a batch, so it has no per-sample gradient, and it would write members'
statistics into its running buffers. Opacus's own fix (``ModuleValidator.fix``) swaps
it for GroupNorm, which is wrong here: the model is a fine-tuned *parent*, whose
conv weights were learnt against the parent's BatchNorm statistics; a GroupNorm in
their place normalises with other statistics and starts fine-tuning from a broken
network; its state_dict no longer loads into ``build_model``; and ``slimming``, whose
masks live on the BatchNorm scales, would have nothing left to measure. Instead every
BatchNorm layer keeps the parent's running statistics and affine weights and runs in
eval mode throughout (a forward pre-hook re-asserts it, whatever ``train()`` calls
do): each layer is then a fixed per-channel affine map, which treats every sample on
its own, so per-sample gradients are exact, and nothing is learnt from members
outside the DP-SGD update. Opacus's validator checks trainable layers only and
accepts the frozen ones. The cost: BatchNorm scales and shifts are not fine-tuned
(a few thousand of the millions of parameters) and the statistics stay the parent's.
The state_dict keeps its keys and shapes, so the model loads into a fresh
``build_model(arch, dataset)`` like any other.

**Pruning masks are baked in and enforced by hand.** ``torch.nn.utils.prune`` trains
``weight_orig`` through a pre-hook that multiplies it by the mask; Opacus's per-sample
gradient hooks compute gradients for the layer's ``weight`` attribute, which is then
no parameter, so they would never reach ``weight_orig``. Before wrapping, the masks
are made permanent (``weight`` becomes a plain parameter with the zeros in it) and
kept aside. Then (1) masked entries of every per-sample gradient are zeroed before
clipping, so pruned weights spend no clipping budget, as their gradient through the
mask would be zero; (2) the noise that lands on masked entries is zeroed before the
optimizer reads the gradient, so Adam's moments stay zero there; (3) after each step
the masks are re-applied, so the zeros hold whatever the optimizer does. Zeroing
noised coordinates is post-processing and costs no privacy. The returned model has
no masks left, as :func:`~mia_ray.pruning.make_permanent` would leave it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader

from mia_ray.training import TrainingHook

ACCOUNTANT = "rdp"
"""Opacus accountant used for epsilon: RDP, the one DP-SGD papers usually report."""


def bake_masks(model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Make every pruning mask permanent; return ``(parameter, mask)`` pairs to keep enforcing.

    The parameter objects are the former ``*_orig`` ones, so an optimizer built over
    the pruned model still holds them.
    """
    pairs = []
    for module in model.modules():
        names = [hook._tensor_name for hook in module._forward_pre_hooks.values()
                 if isinstance(hook, prune.BasePruningMethod)]
        for name in names:
            mask = getattr(module, name + "_mask").detach().clone()
            prune.remove(module, name)
            pairs.append((getattr(module, name), mask))
    return pairs


def _use_running_stats(module: nn.Module, args: tuple) -> None:
    # Runs before every forward: ``model.train()`` may have flipped the flag back.
    module.training = False


def freeze_batchnorm(model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Turn every BatchNorm layer into a fixed affine map: eval statistics, no gradients.

    Returns the handles of the pre-hooks that keep the layers in eval mode.
    """
    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
            module.eval()
            handles.append(module.register_forward_pre_hook(_use_running_stats))
    return handles


def _mask_grad_samples(optimizer: Any, pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Zero masked entries of the per-sample gradients before Opacus clips them."""
    clip_and_accumulate = optimizer.clip_and_accumulate

    def masked_clip_and_accumulate() -> None:
        for p, mask in pairs:
            samples = getattr(p, "grad_sample", None)
            for g in samples if isinstance(samples, list) else [samples]:
                if g is not None:
                    g.mul_(mask)  # (B, *shape) * (*shape): one mask for every sample
        clip_and_accumulate()

    # DPOptimizer.pre_step calls self.clip_and_accumulate(); an instance attribute
    # shadows the method for this optimizer only. Opacus has no public hook there.
    optimizer.clip_and_accumulate = masked_clip_and_accumulate


class DPSGDHook(TrainingHook):
    """Fine-tune with Opacus DP-SGD; :meth:`metadata` reports the epsilon spent.

    Args:
        noise_multiplier: sigma, noise std relative to the clip norm (> 0).
        max_grad_norm: per-sample L2 clip norm C (> 0).
        delta: the delta at which epsilon is reported.
    """

    def __init__(self, *, noise_multiplier: float, max_grad_norm: float, delta: float) -> None:
        for name, value in (("noise_multiplier", noise_multiplier),
                            ("max_grad_norm", max_grad_norm)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)
        self.delta = float(delta)
        self.engine: Any = None  # opacus.PrivacyEngine once prepared
        self.masks: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._net: Any = None
        self._bn_handles: list[torch.utils.hooks.RemovableHandle] = []
        self._result: dict[str, Any] | None = None

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                loader: DataLoader) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        # Imported here: opacus is slow to import and only DP runs need it.
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator

        self.masks = bake_masks(model)
        model.train()  # Opacus refuses a model in eval mode (the restored parent is)
        self._bn_handles = freeze_batchnorm(model)
        # Anything else Opacus cannot give per-sample gradients for fails here, with
        # Opacus's own explanation, rather than silently mid-training.
        ModuleValidator.validate(model, strict=True)
        with warnings.catch_warnings():
            # Opacus warns that its secure RNG is off. That is deliberate: the noise
            # comes from fit's seeded generator, so a model is reproducible from its spec.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = PrivacyEngine(accountant=ACCOUNTANT)
        net, dp_optimizer, dp_loader = self.engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
            poisson_sampling=True)
        self._net = net
        if self.masks:
            _mask_grad_samples(dp_optimizer, self.masks)
            dp_optimizer.original_optimizer.register_step_pre_hook(self._zero_masked_grads)
            dp_optimizer.original_optimizer.register_step_post_hook(self._reapply_masks)
        return net, dp_optimizer, dp_loader

    def _zero_masked_grads(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        for p, mask in self.masks:
            if p.grad is not None:
                p.grad.mul_(mask)

    def _reapply_masks(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        with torch.no_grad():
            for p, mask in self.masks:
                p.mul_(mask)

    @property
    def sample_rate(self) -> float:
        """Poisson sampling rate q = 1 / batches per epoch (Opacus's choice)."""
        if self.engine is None or not self.engine.accountant.history:
            return float("nan")
        return float(self.engine.accountant.history[-1][1])

    @property
    def steps(self) -> int:
        """Noisy steps taken so far (what the accountant has composed)."""
        if self.engine is None:
            return 0
        return int(sum(n for _, _, n in self.engine.accountant.history))

    def epsilon(self) -> float:
        """The accountant's epsilon at ``delta`` for the steps so far (0 before any)."""
        return 0.0 if self.engine is None else float(self.engine.get_epsilon(self.delta))

    def metadata(self) -> dict[str, Any]:
        """Epsilon and the numbers it was computed from.

        :func:`~mia_ray.training.train` calls this once, after the last step; that is
        also when Opacus's hooks and per-sample gradient buffers (as large as a batch
        of gradients) and the BatchNorm pre-hooks are taken off the model, so the
        trained model is a plain module again. Later calls return the same numbers.
        """
        if self._result is None:
            self._result = {"epsilon": self.epsilon(), "delta": self.delta,
                            "noise_multiplier": self.noise_multiplier,
                            "max_grad_norm": self.max_grad_norm,
                            "dp_steps": self.steps, "sample_rate": self.sample_rate}
            self.release()
        return dict(self._result)

    def release(self) -> None:
        """Detach Opacus and the BatchNorm pre-hooks from the model (idempotent)."""
        if self._net is not None:
            self._net._close()
            self._net = None
        for handle in self._bn_handles:
            handle.remove()
        self._bn_handles = []


def make_dpsgd_hook(defense, **context: Any) -> DPSGDHook:
    """Registry factory: sigma = ``defense.strength``, C = ``defense.clip_norm``."""
    return DPSGDHook(noise_multiplier=defense.strength, max_grad_norm=defense.clip_norm,
                     delta=defense.delta)
