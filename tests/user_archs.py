"""Architectures by reference, as a user writes them, for the tests that name them
(``tests.user_archs:tiny_cnn``). Kept apart from the tests: a reference's key hashes
this module's source, so editing a test never changes the keys or seeds of its models."""

from __future__ import annotations

from torch import nn


def tiny_cnn(input_shape, num_classes):
    """A user architecture: conv without BatchNorm, so slimming cannot apply."""
    channels, height, width = input_shape
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * height * width, num_classes))


def conv_bn_net(input_shape, num_classes):
    """Conv, BatchNorm and Linear layers: every pruning method has something to act on."""
    channels, height, width = input_shape
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * height * width, num_classes))


def not_a_module(input_shape, num_classes):
    return "a string"


def wrong_outputs(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))
