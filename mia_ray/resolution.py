"""Resolution: the one step that reads a user's files and imports a user's code.

A command turns what the user named into resolved specs here, once, before it builds
a spec: a dataset given by path is read, checked, hashed and described (stem,
content hash, class count, input shape); an audit's member file is read and checked
against its pool; an architecture given by reference (``package.module:function``)
is imported, built and run on a batch of each dataset's inputs, and its module's
source is hashed. The specs carry what was found, so that constructing, copying,
hashing and comparing one afterwards reads no file and imports nothing.

A bad value fails here with one :class:`~mia_ray.errors.SpecError` (or
:class:`~mia_ray.errors.DatasetFileError`) naming the field, the value and what is
allowed, before any work starts.

The data route then reads top to bottom: resolve (here) -> stage
(:mod:`mia_ray.data.staging`, a sweep's driver) -> load (:mod:`mia_ray.data.loaders`)
-> split (:mod:`mia_ray.data.splits`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from mia_ray.catalog import DATASETS, is_arch_reference
from mia_ray.data import custom
from mia_ray.data.loaders import load_pool
from mia_ray.data.members import members_hash, read_members
from mia_ray.info import ArchReference, DatasetInfo
from mia_ray.specs import DatasetSpec


def resolve_dataset(name: str, *, label_column: str = "label", **fields: Any) -> DatasetSpec:
    """The DatasetSpec of a built-in name, or of the file or folder at path ``name``
    (read and checked now; its spec then carries the stem, content hash and shape)."""
    if isinstance(name, str) and name in DATASETS:
        return DatasetSpec(name=name, label_column=label_column, **fields)
    found = custom.resolve(name, label_column, known=DATASETS)
    return DatasetSpec(name=found.name, path=found.path, content=found.content,
                       custom=found.info, label_column=label_column, **fields)


def resolve_members(dataset: DatasetSpec, members_path: str) -> DatasetSpec:
    """The audit's dataset with its member set: the file is read and checked against
    the pool's size once, here; the spec carries the indices and their hash."""
    indices = read_members(members_path, len(load_pool(dataset).y))
    return dataclasses.replace(dataset, members=members_hash(indices),
                               members_path=os.path.abspath(members_path),
                               member_indices=indices)


def resolve_arch(arch: str, datasets: Iterable[DatasetInfo]) -> str:
    """An architecture reference imported, checked and described for the inputs of
    each of ``datasets``; a built-in name (or any other value) comes back as it is,
    for the specs to accept or refuse."""
    if not is_arch_reference(arch):
        return arch
    from mia_ray.archs import reference_identity, reference_info  # torch: only when used

    ref = str(arch)
    inputs = {(tuple(d.input_shape), d.num_classes): d for d in datasets}
    layers = tuple((key, reference_info(ref, info)) for key, info in inputs.items())
    return ArchReference(ref, reference_identity(ref), layers)


def resolve_axes(datasets: Iterable[str], archs: Iterable[str], *,
                 label_column: str = "label") -> dict[str, tuple]:
    """A grid's ``archs`` and ``resolved`` fields for these dataset and arch values:
    each dataset path read once, each reference resolved for every dataset's inputs.
    ``GridSpec(datasets=..., **resolve_axes(datasets, archs))``."""
    datasets = tuple(datasets)
    resolved = tuple((d, resolve_dataset(d, label_column=label_column))
                     for d in datasets if d not in DATASETS)
    infos = [DATASETS[d] for d in datasets if d in DATASETS] + [r.info for _, r in resolved]
    return {"archs": tuple(resolve_arch(a, infos) for a in archs), "resolved": resolved}
