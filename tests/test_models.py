"""Architectures: output shapes, seeded initialisation, CIFAR stems, pickling, bad names."""

import pickle

import pytest
import torch

from mia_ray import models
from mia_ray.catalog import ARCHS, DATASETS
from mia_ray.errors import SpecError
from mia_ray.models import build_model


@pytest.mark.parametrize("arch, dataset", [
    ("fc", "purchase100"),
    ("fc", "digits"),
    ("small_cnn", "digits"),
    ("resnet18", "cifar10"),
    ("vgg16_bn", "cifar100"),
    ("densenet121", "cifar10"),
])
def test_forward_shape(arch, dataset):
    info = DATASETS[dataset]
    model = build_model(arch, dataset, seed=0)
    assert model.arch == arch
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *info.input_shape))
    assert out.shape == (2, info.num_classes)
    assert torch.isfinite(out).all()


def test_every_arch_has_a_builder():
    assert set(models._BUILDERS) == set(ARCHS)


@pytest.mark.parametrize("arch, dataset", [("small_cnn", "digits"), ("fc", "location")])
def test_seed_fixes_the_weights(arch, dataset):
    a = build_model(arch, dataset, seed=1).state_dict()
    b = build_model(arch, dataset, seed=1).state_dict()
    c = build_model(arch, dataset, seed=2).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))


def test_init_is_xavier_zero_bias_unit_batchnorm():
    model = build_model("small_cnn", "digits", seed=0)
    conv, bn, linear = model[0], model[1], model[-1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
    # Xavier-normal: std = sqrt(2 / (fan_in + fan_out)).
    fan_in, fan_out = 1 * 9, conv.out_channels * 9
    std = conv.weight.std().item()
    assert 0.8 < std / (2 / (fan_in + fan_out)) ** 0.5 < 1.2


def test_building_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    build_model("resnet18", "cifar10", seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_cifar_style_stems():
    resnet = build_model("resnet18", "svhn", seed=0)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    dense = build_model("densenet121", "chmnist", seed=0)
    assert dense.features.conv0.kernel_size == (3, 3)
    assert dense.classifier.out_features == 8


def test_resnet18_keeps_the_stem_max_pool():
    # The authors' CIFAR ResNet: a 32x32 image reaches layer1 as a 16x16 map.
    resnet = build_model("resnet18", "cifar10", seed=0).eval()
    assert isinstance(resnet.maxpool, torch.nn.MaxPool2d)
    seen = []
    resnet.layer1.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    with torch.no_grad():
        resnet(torch.randn(1, 3, 32, 32))
    assert seen == [torch.Size([1, 64, 16, 16])]


def test_densenet121_keeps_pool0():
    dense = build_model("densenet121", "cifar10", seed=0)
    assert isinstance(dense.features.pool0, torch.nn.MaxPool2d)


def test_vgg16_bn_has_the_reference_classifier():
    vgg = build_model("vgg16_bn", "cifar10", seed=0)
    assert sum(p.numel() for p in vgg.parameters()) == 33_646_666
    linears = [m for m in vgg.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (512, 4096), (4096, 4096), (4096, 10)]
    assert [m.p for m in vgg.classifier if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]


def test_pickles():
    model = build_model("small_cnn", "digits", seed=0)
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(3, 1, 8, 8)
    model.eval()
    clone.eval()
    assert torch.equal(model(x), clone(x))


@pytest.mark.parametrize("arch, dataset", [
    ("nope", "digits"), ("fc", "nope"), ("small_cnn", "purchase100"),
])
def test_bad_names_raise_spec_error(arch, dataset):
    with pytest.raises(SpecError):
        build_model(arch, dataset, seed=0)
