"""Stage every dataset's pool into the sweep's storage, so that no node needs data files.

Before any work starts, the driver reads each dataset of the grid from its own data
root (downloading it there once, with ``--download``) and writes the pool under the
artifact store as ``pools/<name>-<hash>/x.npy`` and ``y.npy`` (plain ``.npy``, read with
``allow_pickle=False``), then ``meta.json`` last, as every artifact. The hash covers
the dataset's source files (or, for a dataset without files, its arrays), so an
edited file is staged afresh and an unchanged one is staged once.

A dataset given by path is hashed by its own file, or by the files under its folder
(their content hash, :func:`mia_ray.data.custom.content_hash`, with the label column),
never by a built-in source, even when its stem is a built-in name (``digits.npz``).
An audit's member set is staged beside the pool as ``members/<its hash>/members.npy``,
so no node needs the member file either.

Trainers and trials receive the map {pool id: staged key} (:func:`use`) and read
through :mod:`mia_ray.data.staged`, which this module feeds and the loaders ask.

A driver whose data root is empty may still start a sweep when the storage holds a
staged copy: ``pools/index/<pool id>.json`` records the last one staged per dataset.
"""

from __future__ import annotations

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
from mia_ray.data.members import members_hash, read_members
from mia_ray.data.staged import (  # noqa: F401 - what trainers and trials call here too
    CACHE_ENV,
    CHUNK,
    MEMBERS,
    POOLS,
    cache_dir,
    pool_id,
    staged_arrays,
    use,
)
from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.specs import KEY_VERSION, DatasetSpec, canonical_json
from mia_ray.store import ArtifactStore, write_bytes_atomic

INDEX = "index"
# Bump when the staged files' layout changes.
STAGE_FORMAT = 1


def _source_files(dataset: DatasetSpec) -> list[str]:
    if dataset.path:  # by path: its own file, or the files under its folder
        return custom.source_files(dataset.path)
    try:
        paths = loaders.expected_files(dataset.name, os.path.abspath(dataset.root))
    except KeyError:  # a source that does not list its files is hashed by its arrays
        return []
    return [p for p in paths if os.path.isfile(p)]


def source_digest(dataset: DatasetSpec) -> str:
    """SHA-256 over the dataset's source files (name, size, bytes), or over its arrays
    when it has no files (the bundled digits). Run after the files were checked.

    A dataset by path is named by its content hash (the bytes of its file or of the
    files under its folder, already computed when its spec was built) and its label
    column, so it never shares a digest with a built-in set of the same stem."""
    header = {"name": dataset.name, "format": STAGE_FORMAT, "v": KEY_VERSION}
    if dataset.path:
        header.update(content=dataset.content, label_column=dataset.label_column)
        return hashlib.sha256(canonical_json(header).encode()).hexdigest()
    h = hashlib.sha256(canonical_json(header).encode())
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
    return h.hexdigest()


def staged_key(dataset: DatasetSpec, digest: str) -> str:
    """``<name>-<16 hex>``; a path-like name keeps only its safe characters."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(dataset.name))[:40] or "pool"
    return f"{name}-{digest[:16]}"


def _index_path(store: ArtifactStore, pid: str) -> str:
    return posixpath.join(store.base, POOLS, INDEX, f"{pid}.json")


def find_staged(dataset: DatasetSpec, store_root: str) -> str | None:
    """The staged key recorded for this dataset in the storage, if its copy is complete."""
    store = ArtifactStore(store_root)
    path = _index_path(store, pool_id(dataset))
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
    key = staged_key(dataset, source_digest(dataset))
    if not store.has(POOLS, key):
        pool = loaders.load_pool(dataset)
        _write_npy(store.fs, store.path(POOLS, key, "x.npy"), pool.x)
        _write_npy(store.fs, store.path(POOLS, key, "y.npy"), pool.y)
        store.put_meta(POOLS, key, {"dataset": dataset.name, "pool_id": pool_id(dataset),
                                    "n": len(pool.y), "x_shape": list(pool.x.shape),
                                    "sources": _source_names(dataset)})
    if dataset.members:
        stage_members(dataset, store_root)
    write_bytes_atomic(store.fs, _index_path(store, pool_id(dataset)),
                       json.dumps({"key": key, "dataset": dataset.name}).encode())
    return key


def stage_pools(datasets: Iterable[DatasetSpec], store_root: str) -> dict[str, str]:
    """Stage each distinct pool once; return {pool id: staged key} for :func:`use`."""
    staged: dict[str, str] = {}
    for dataset in datasets:
        pid = pool_id(dataset)
        if pid not in staged:
            staged[pid] = stage_pool(dataset, store_root)
    loaders.clear_cache()  # the driver reads no pool after this: free the memory
    return staged


def _source_names(dataset: DatasetSpec) -> list[str]:
    files = _source_files(dataset)
    if dataset.path and os.path.isdir(dataset.path):
        return [os.path.relpath(f, dataset.path) for f in files]
    return [os.path.basename(f) for f in files]


def stage_members(dataset: DatasetSpec, store_root: str) -> str:
    """Copy an audit's member indices into the storage under their hash; return it.

    Read from ``members_path`` on the driver, checked against the hash the run was
    planned with, written once: a worker that cannot see the file reads this copy.
    """
    store = ArtifactStore(store_root)
    if store.has(MEMBERS, dataset.members):
        return dataset.members
    idx = read_members(dataset.members_path, len(loaders.load_pool(dataset).y))
    if members_hash(idx) != dataset.members:
        raise SpecError("members", dataset.members_path,
                        "the member file the run was planned with; it changed since")
    _write_npy(store.fs, store.path(MEMBERS, dataset.members, "members.npy"), idx)
    store.put_meta(MEMBERS, dataset.members, {"n_members": len(idx),
                                               "source": os.path.basename(
                                                   dataset.members_path)})
    return dataset.members
