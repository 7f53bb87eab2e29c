"""The forward pass of N stacked networks: grouped kernels for plain Sequentials, else vmap.

``forward_fn(template)`` returns ``(params, buffers, masks, drops, x) -> (N, B, ...)``
outputs. Sequential nets of plain layers (the fc and small_cnn architectures, the MLP
attacks) run as grouped layers; anything else (ResNet's residual blocks, SAMIA)
through ``torch.func.vmap`` over ``functional_call``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from mia_ray.stacking.layout import MaskDropout


def forward_fn(template: nn.Module, force_vmap: bool = False) -> Callable:
    """The stacked forward of ``template``'s architecture (see the module docstring)."""
    if not force_vmap and Grouped.applies(template):
        return Grouped(template)

    def one(params, buffers, masks, drops, x):
        weights = {k: p * masks[k] if k in masks else p for k, p in params.items()}
        return functional_call(template, (weights, buffers, drops), (x,))

    return vmap(one)


class Grouped:
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
    _FLAT = (nn.Linear, MaskDropout)

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
            elif isinstance(module, MaskDropout):
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
