"""Architectures by reference: ``package.module:function`` instead of a built-in name.

The function takes ``(input_shape, num_classes)`` and returns an ``nn.Module``;
``input_shape`` is (C, H, W) for images and (D,) for tabular data. torchvision's
model builders work as they are (``torchvision.models:resnet34``): they are called
with ``weights=None, num_classes=C`` and their first convolution is rebuilt for the
input's channel count.

A reference is checked before any work starts: it must import, return a module, and
map a batch of the dataset's inputs to ``num_classes`` outputs. Its key identity is
the reference plus a hash of its module's source, so editing the function never
reuses models built from the old one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect

import torch
from torch import nn

from mia_ray.errors import SpecError
from mia_ray.info import ArchInfo, DatasetInfo

HOW = "'package.module:function' where function(input_shape, num_classes) returns an nn.Module"
TORCHVISION = "torchvision.models"


@functools.lru_cache(maxsize=64)
def resolve(ref: str):
    """The callable named by ``ref``, or a SpecError saying why not."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise SpecError("arch", ref, HOW)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import-time failure is the user's to see, in one line
        raise SpecError("arch", ref, f"{HOW}; importing {module_name!r} failed: "
                        f"{type(e).__name__}: {e}") from e
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise SpecError("arch", ref, f"{HOW}; {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise SpecError("arch", ref, f"{HOW}; {attr!r} is not callable")
    return fn


@functools.lru_cache(maxsize=64)
def reference_identity(ref: str) -> str:
    """``ref#<hash of its module's source>``: what enters the spec keys."""
    fn = resolve(ref)
    try:
        source = inspect.getsource(inspect.getmodule(fn) or fn)
    except (OSError, TypeError):  # built-in or source-less: the qualified name alone
        source = getattr(fn, "__qualname__", ref)
    return f"{ref}#{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def _first_conv_for(model: nn.Module, channels: int) -> None:
    """Rebuild the first Conv2d of a torchvision model for ``channels`` input channels."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != channels:
                    setattr(parent, name, nn.Conv2d(
                        channels, child.out_channels, child.kernel_size, child.stride,
                        child.padding, bias=child.bias is not None))
                return


def build_reference(ref: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Call the referenced function and check what it returns."""
    fn = resolve(ref)
    try:
        if ref.startswith(TORCHVISION + ":"):
            model = fn(weights=None, num_classes=num_classes)
            if len(input_shape) == 3:
                _first_conv_for(model, input_shape[0])
        else:
            model = fn(tuple(input_shape), num_classes)
    except Exception as e:
        raise SpecError("arch", ref, f"{HOW}; calling it with ({tuple(input_shape)}, "
                        f"{num_classes}) failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise SpecError("arch", ref, f"{HOW}; it returned {type(model).__name__}, "
                        "not an nn.Module")
    return model


def check_outputs(model: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                  what: str = "arch", value: object = None) -> None:
    """Refuse a model whose output on this dataset's inputs is not (N, num_classes)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as e:
        raise SpecError(what, value, f"a model that takes inputs of shape "
                        f"(N, {', '.join(map(str, input_shape))}); its forward failed: "
                        f"{type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(what, value, f"a model with {num_classes} outputs, one per class of "
                        f"the data; it returns {shape} for a batch of 2")


@functools.lru_cache(maxsize=64)
def _inspect(ref: str, input_shape: tuple[int, ...], num_classes: int) -> ArchInfo:
    with torch.random.fork_rng(devices=[]):
        model = build_reference(ref, input_shape, num_classes)
    check_outputs(model, input_shape, num_classes, "arch", ref)
    kinds = ("image",) if len(input_shape) == 3 else ("tabular",)
    return ArchInfo(has_conv=any(isinstance(m, nn.Conv2d) for m in model.modules()),
                    has_batchnorm=any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                      for m in model.modules()),
                    input_kinds=kinds)


def reference_info(ref: str, dataset: DatasetInfo) -> ArchInfo:
    """Which layers the referenced model has on this dataset's inputs (built once,
    cached): what :func:`mia_ray.resolution.resolve_arch` records for the specs."""
    resolve(ref)
    return _inspect(ref, tuple(dataset.input_shape), dataset.num_classes)
