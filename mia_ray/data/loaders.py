"""Load a dataset's whole pool (official train then test) as normalised arrays.

Every source answers three questions: which files it expects (``files``), whether
they are there and look right (``check``, cheap, run before any work starts and the
one place a download may happen), and how to read them (``load``). Pickle is never
used: CIFAR is read from its binary release, tabular data from npz without pickle
or from text.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from mia_ray.catalog import DATASETS
from mia_ray.data import custom, loaders_image, loaders_mnist1d, loaders_tabular
from mia_ray.data.staged import read_staged
from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.specs import DatasetSpec

_SOURCES = {**loaders_image.SOURCES, **loaders_tabular.SOURCES, **loaders_mnist1d.SOURCES}


# eq=False: the generated __eq__ would compare arrays and fail on truth value.
@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Inputs ``x`` (float32, normalised) and class ids ``y`` (int64), both read-only."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def _source(name: str):
    if name not in _SOURCES:  # DatasetSpec validates names; this guards direct callers
        raise SpecError("dataset", name, sorted(_SOURCES))
    return _SOURCES[name]


def expected_files(name: str, root: str) -> list[str]:
    """Paths the dataset is read from. For tabular data the npz comes first and the
    text files after it: either format is enough. (A dataset by path: its ``path``.)"""
    return _source(name).files(root)


def check_available(dataset: DatasetSpec) -> None:
    """Raise DatasetFileError if the files are missing or visibly malformed.

    With ``dataset.download`` set, missing CIFAR/SVHN files are downloaded here, so
    one process fetches them before workers start reading.
    """
    if dataset.path:  # read and checked when it was resolved; still there, unchanged?
        if not os.path.exists(dataset.path):
            raise DatasetFileError(dataset.name, dataset.path, "no such file or folder",
                                   custom.HOW)
        custom.load(dataset.path, dataset.content, dataset.label_column)
        return
    # Absolute, so messages say where the files were looked for whatever the cwd.
    _source(dataset.name).check(os.path.abspath(dataset.root), dataset.download)


def load_pool(dataset: DatasetSpec) -> ArrayDataset:
    """The whole pool, official train then test; cached per (name, root) in-process.

    In a sweep's trainers and trials the pool comes from the copy the driver staged
    in the storage (``dataset.staged``, :mod:`mia_ray.data.staged`), never from this
    node's data root.
    """
    if dataset.staged is not None:
        return ArrayDataset(*read_staged(dataset.staged))
    if dataset.path:
        x, y = custom.load(dataset.path, dataset.content, dataset.label_column)
        return ArrayDataset(x=x, y=y)
    check_available(dataset)
    return _load_cached(dataset.name, os.path.abspath(dataset.root))


# Small: a CIFAR pool is ~0.7 GB of float32 and a worker reads one dataset.
@functools.lru_cache(maxsize=2)
def _load_cached(name: str, root: str) -> ArrayDataset:
    x, y = _source(name).load(root)
    info = DATASETS[name]
    # Sources validate the files; these guard the contract the models rely on.
    assert x.dtype == np.float32 and x.shape[1:] == info.input_shape, (x.dtype, x.shape)
    assert y.dtype == np.int64 and y.shape == (len(x),), (y.dtype, y.shape)
    assert len(y) == 0 or (y.min() >= 0 and y.max() < info.num_classes)
    # The cache hands the same arrays to every caller: nobody may change them.
    x.flags.writeable = False
    y.flags.writeable = False
    return ArrayDataset(x=x, y=y)


def clear_cache() -> None:
    """Forget cached pools (tests, or a long-lived worker switching datasets)."""
    _load_cached.cache_clear()
