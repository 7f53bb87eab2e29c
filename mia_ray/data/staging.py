"""Stage every dataset's pool into the sweep's storage, so that no node needs data files.

Before any work starts, the driver reads each dataset of the grid from its own data
root (downloading it there once, with ``--download``) and writes the pool under the
artifact store as ``pools/<name>-<hash>/x.npy`` and ``y.npy`` (plain ``.npy``, read with
``allow_pickle=False``), then ``meta.json`` last, as every artifact. The hash covers
the pool's identity (``DatasetSpec.pool_id``) and its content: the content hash a
dataset given by path was resolved with (its file, or the files under its folder),
or the bytes of a built-in dataset's source files (its arrays, for a dataset without
files). An edited file is staged afresh, an unchanged one once, and a by-path
``digits.npz`` is never taken for the built-in digits.

The engine then hands every spec it sends to a trainer or a trial its pool's staged
location (:func:`located`, ``DatasetSpec.staged``), which the loader reads through
:mod:`mia_ray.data.staged`. An audit's member indices travel in its specs
(``DatasetSpec.member_indices``), so no node needs the member file either.

A driver whose data root is empty may still start a sweep when the storage holds a
staged copy: ``pools/index/<pool id>.json`` records the last one staged per dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
import uuid
from collections.abc import Iterable

import numpy as np
import pyarrow.fs as pafs

from mia_ray.data import custom, loaders
from mia_ray.data.staged import CHUNK, POOLS
from mia_ray.errors import DatasetFileError
from mia_ray.keys import short_hash
from mia_ray.specs import DatasetSpec, StagedPool
from mia_ray.store import ArtifactStore, write_bytes_atomic

INDEX = "index"
# Bump when the staged files' layout changes (2: keyed by the pool's identity and content).
STAGE_FORMAT = 2


def _source_files(dataset: DatasetSpec) -> list[str]:
    if dataset.path:  # by path: its own file, or the files under its folder
        return custom.source_files(dataset.path)
    try:
        paths = loaders.expected_files(dataset.name, os.path.abspath(dataset.root))
    except KeyError:  # a source that does not list its files is hashed by its arrays
        return []
    return [p for p in paths if os.path.isfile(p)]


def pool_content(dataset: DatasetSpec) -> str:
    """What the pool's bytes hash to. A dataset by path was hashed when it was resolved
    (``content``); a built-in one is hashed here, over its source files (name, size,
    bytes) or, without files (the bundled digits), its arrays. Run after the files
    were checked."""
    if dataset.path:
        return dataset.content
    h = hashlib.sha256()
    files = _source_files(dataset)
    for path in files:
        h.update(f"{os.path.basename(path)}:{os.path.getsize(path)}".encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
    if not files:
        pool = loaders.load_pool(dataset)
        for a in (pool.x, pool.y):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


def staged_key(dataset: DatasetSpec, content: str) -> str:
    """``<name>-<16 hex>`` over the pool's identity and content; a path-like name keeps
    only its safe characters."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(dataset.name))[:40] or "pool"
    digest = short_hash({"pool": dataset.pool_id, "content": content, "format": STAGE_FORMAT})
    return f"{name}-{digest}"


def _index_path(store: ArtifactStore, pid: str) -> str:
    return posixpath.join(store.base, POOLS, INDEX, f"{pid}.json")


def find_staged(dataset: DatasetSpec, store_root: str) -> str | None:
    """The staged key recorded for this dataset in the storage, if its copy is complete."""
    store = ArtifactStore(store_root)
    path = _index_path(store, dataset.pool_id)
    if store.fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with store.fs.open_input_stream(path) as f:
        key = json.loads(f.read())["key"]
    return key if store.has(POOLS, key) else None


def check_source(dataset: DatasetSpec, store_root: str) -> None:
    """The driver's pre-flight check: the files are there (downloading them if allowed),
    or the storage already holds a staged copy. Raises the loader's DatasetFileError."""
    try:
        loaders.check_available(dataset)
    except DatasetFileError:
        if find_staged(dataset, store_root) is None:
            raise


def _write_npy(fs: pafs.FileSystem, path: str, array: np.ndarray) -> None:
    """Stream one array to a hidden temporary file, then move it into place."""
    folder, name = posixpath.split(path)
    fs.create_dir(folder, recursive=True)
    tmp = posixpath.join(folder, f".tmp-{uuid.uuid4().hex}-{name}")
    with fs.open_output_stream(tmp) as out:
        np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    fs.move(tmp, path)


def stage_pool(dataset: DatasetSpec, store_root: str) -> str:
    """Make sure the storage holds this dataset's pool; return its staged key."""
    store = ArtifactStore(store_root)
    try:
        loaders.check_available(dataset)
    except DatasetFileError:
        key = find_staged(dataset, store_root)
        if key is None:
            raise
        return key  # no files here, but an earlier driver staged them
    key = staged_key(dataset, pool_content(dataset))
    if not store.has(POOLS, key):
        pool = loaders.load_pool(dataset)
        _write_npy(store.fs, store.path(POOLS, key, "x.npy"), pool.x)
        _write_npy(store.fs, store.path(POOLS, key, "y.npy"), pool.y)
        store.put_meta(POOLS, key, {"dataset": dataset.name, "pool_id": dataset.pool_id,
                                    "n": len(pool.y), "x_shape": list(pool.x.shape),
                                    "sources": _source_names(dataset)})
    write_bytes_atomic(store.fs, _index_path(store, dataset.pool_id),
                       json.dumps({"key": key, "dataset": dataset.name}).encode())
    return key


def stage_pools(datasets: Iterable[DatasetSpec], store_root: str) -> dict[str, str]:
    """Stage each distinct pool once; return {pool id: staged key} for :func:`located`."""
    staged: dict[str, str] = {}
    for dataset in datasets:
        if dataset.pool_id not in staged:
            staged[dataset.pool_id] = stage_pool(dataset, store_root)
    loaders.clear_cache()  # the driver reads no pool after this: free the memory
    return staged


def _source_names(dataset: DatasetSpec) -> list[str]:
    files = _source_files(dataset)
    if dataset.path and os.path.isdir(dataset.path):
        return [os.path.relpath(f, dataset.path) for f in files]
    return [os.path.basename(f) for f in files]


def located(specs: Iterable, store_root: str, pools: dict[str, str]) -> list:
    """The specs (anything with a ``dataset``: cells, models) with their pool's staged
    location set, for the trainers and trials of a sweep; one located dataset per
    distinct dataset, so the specs that shared one still do."""
    datasets: dict[str, DatasetSpec] = {}

    def locate(dataset: DatasetSpec) -> DatasetSpec:
        key = pools.get(dataset.pool_id)
        if key is None:
            return dataset
        if dataset.key() not in datasets:
            datasets[dataset.key()] = dataclasses.replace(
                dataset, staged=StagedPool(store_root=store_root, key=key))
        return datasets[dataset.key()]

    return [dataclasses.replace(s, dataset=locate(s.dataset)) for s in specs]
