"""Target and shadow architectures, built from a name, a dataset and a seed.

The image networks are torchvision's definitions with the CIFAR-style changes of
the authors' code (docs/method.md, "Models"): a 3x3 stride-1 stem that keeps the
stem max-pool, and for VGG-16-BN a 512 -> 4096 -> 4096 -> C classifier on the
1x1 feature map of a 32x32 input. Every weight is then redrawn from a generator
seeded with ``seed``, so a model is a pure function of ``(arch, dataset, seed)``
and global RNG state is left as it was.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision import models as tvm

from mia_ray.catalog import DATASETS, DatasetInfo, arch_info, is_arch_reference
from mia_ray.errors import SpecError
from mia_ray.specs import DatasetSpec


def build_model(arch: str, dataset: str | DatasetSpec | DatasetInfo, *, seed: int) -> nn.Module:
    """Build an initialised model for one dataset.

    Args:
        arch: One of ``specs.ARCHS``, or ``package.module:function`` (``mia_ray.archs``).
        dataset: One of ``specs.DATASETS``, a DatasetSpec (a dataset by path) or its
            DatasetInfo; fixes the input shape and class count.
        seed: Seeds the generator every weight is drawn from.

    Returns:
        The model on the CPU, in training mode, with an ``arch`` attribute naming
        its architecture (pruning reads it to refuse methods that cannot apply).

    Raises:
        SpecError: unknown name, or an architecture that does not take this
            dataset's inputs (e.g. a CNN on tabular data).
    """
    if isinstance(dataset, DatasetSpec):
        info = dataset.info
    elif isinstance(dataset, DatasetInfo):
        info = dataset
    elif dataset in DATASETS:
        info = DATASETS[dataset]
    else:
        raise SpecError("dataset", dataset, tuple(DATASETS))
    # A reference is checked as it is built (build_reference); a name by the catalog.
    if not is_arch_reference(arch) and info.kind not in arch_info(arch, info).input_kinds:
        raise SpecError("arch", arch, f"an architecture that takes {info.kind} inputs")
    # torchvision's constructors draw their own init from the global RNG; fork it so
    # building a model never shifts the random stream of the caller, and seed it so
    # layers init_weights does not redraw (in a referenced architecture) are seeded too.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if is_arch_reference(arch):
            from mia_ray.archs import build_reference

            model = build_reference(arch, tuple(info.input_shape), info.num_classes)
        else:
            model = _BUILDERS[arch](info.input_shape, info.num_classes)
    init_weights(model, seed=seed)
    model.arch = arch
    return model


def init_weights(model: nn.Module, *, seed: int) -> None:
    """Xavier-normal conv/linear weights, zero biases, BatchNorm (1, 0), from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(module.weight, generator=gen)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.fill_(1.0)
                module.bias.zero_()


def _fc(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 256), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(128, num_classes),
    )


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows would cancel it.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _small_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    # Sized for 8x8 digits: enough capacity to memorise a few hundred samples (a
    # leaking target), cheap enough for a small fraction of a second per epoch on one
    # core (BENCHMARKS.md section 2 times it). Pooling first keeps the two wider convs
    # on 4x4 maps, where they cost a quarter as much.
    channels, height, width = input_shape
    return nn.Sequential(
        *_conv_bn(channels, 16),
        nn.MaxPool2d(2),
        *_conv_bn(16, 32),
        *_conv_bn(32, 32),
        nn.Flatten(),
        nn.Linear(32 * (height // 2) * (width // 2), num_classes),
    )


def _resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    # Only the stem conv changes; torchvision's 3x3/2 max-pool stays, as in the authors'
    # CIFAR ResNet, so layer1 works on 16x16 maps of a 32x32 image.
    model = tvm.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    return model


class _CifarVGG(nn.Module):
    """torchvision's VGG feature stack with the authors' classifier for 32x32 inputs."""

    def __init__(self, features: nn.Module, num_classes: int):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # ImageNet's head on the 1x1 map: 512 -> 4096 -> 4096 -> C (33,646,666
        # parameters in all for C = 10). Unstructured pruning prunes these layers too.
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _vgg16_bn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    # Five max-pools take 32x32 to 1x1, so torchvision's 7x7 pool would only copy one
    # pixel 49 times into a 25088-wide first layer; building that head and throwing it
    # away also costs seconds, hence the features alone plus a head on the 1x1 map.
    features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"], batch_norm=True)
    features[0] = nn.Conv2d(input_shape[0], 64, 3, padding=1)
    return _CifarVGG(features, num_classes)


def _densenet121(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    model = tvm.densenet121(weights=None, num_classes=num_classes)
    # The stem max-pool (pool0) stays, as in the authors' CIFAR DenseNet.
    model.features.conv0 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    return model


_BUILDERS = {
    "fc": _fc,
    "small_cnn": _small_cnn,
    "resnet18": _resnet18,
    "vgg16_bn": _vgg16_bn,
    "densenet121": _densenet121,
}
