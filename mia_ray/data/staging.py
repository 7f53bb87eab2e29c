"""Stage every dataset's pool into the sweep's storage, so that no node needs data files.

Before any work starts, the driver reads each dataset of the grid from its own data
root (downloading it there once, with ``--download``) and writes the pool under the
artifact store as ``pools/<name>-<hash>/x.npy`` and ``y.npy`` (plain ``.npy``, read with
``allow_pickle=False``), then ``meta.json`` last, as every artifact. The hash covers
the dataset's source files (or, for a dataset without files, its arrays), so an
edited file is staged afresh and an unchanged one is staged once.

Trainers and trials receive the map {pool id: staged key} (:func:`use`); the generic
pool loader (:func:`mia_ray.data.loaders.load_pool`) asks :func:`staged_pool` first.
The first load on a node copies the two files into a per-node cache folder
(``MIA_RAY_POOL_CACHE``, default ``<tmp>/mia-ray-pools``) and every process of that
node memory-maps the same copy.

A driver whose data root is empty may still start a sweep when the storage holds a
staged copy: ``pools/index/<pool id>.json`` records the last one staged per dataset.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import re
import tempfile
import uuid
from collections.abc import Iterable

import numpy as np
import pyarrow.fs as pafs

from mia_ray.data import loaders
from mia_ray.errors import DatasetFileError
from mia_ray.specs import KEY_VERSION, DatasetSpec, canonical_json
from mia_ray.store import ArtifactStore, write_bytes_atomic

POOLS = "pools"
INDEX = "index"
# Bump when the staged files' layout changes.
STAGE_FORMAT = 1
CACHE_ENV = "MIA_RAY_POOL_CACHE"
_CHUNK = 1 << 24

# This process's staged pools: set by use() in trainers and trials.
_active: dict[str, object] = {"root": None, "pools": {}}


def pool_id(dataset: DatasetSpec) -> str:
    """What names a pool apart from where its files are: the dataset's key without the
    seed (which only shuffles the pool) and K (which only counts shadow splits)."""
    fields = {k: v for k, v in dataset.key_dict().items()
              if k not in ("seed", "num_shadows", "v")}
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:16]


def _source_files(dataset: DatasetSpec) -> list[str]:
    if dataset.path:  # a dataset given by path: its file; a folder is hashed by its arrays
        return [dataset.path] if os.path.isfile(dataset.path) else []
    try:
        paths = loaders.expected_files(dataset.name, os.path.abspath(dataset.root))
    except KeyError:  # a source that does not list its files is hashed by its arrays
        return []
    return [p for p in paths if os.path.isfile(p)]


def source_digest(dataset: DatasetSpec) -> str:
    """SHA-256 over the dataset's source files (name, size, bytes), or over its arrays
    when it has no files (the bundled digits). Run after the files were checked."""
    h = hashlib.sha256(canonical_json(
        {"name": dataset.name, "format": STAGE_FORMAT, "v": KEY_VERSION}).encode())
    files = _source_files(dataset)
    for path in files:
        h.update(f"{os.path.basename(path)}:{os.path.getsize(path)}".encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
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
                                    "sources": [os.path.basename(p)
                                                for p in _source_files(dataset)]})
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


def use(store_root: str, pools: dict[str, str]) -> None:
    """Make this process load these pools from the storage instead of a data root."""
    _active["root"] = store_root
    _active["pools"] = dict(pools)


def staged_pool(dataset: DatasetSpec) -> loaders.ArrayDataset | None:
    """The staged pool of this dataset, if this process was told about one."""
    key = _active["pools"].get(pool_id(dataset))  # type: ignore[union-attr]
    if key is None:
        return None
    return _load_staged(str(_active["root"]), key)


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "mia-ray-pools")


def _fetch(store: ArtifactStore, key: str, name: str, folder: str) -> str:
    """Copy one staged file into the node's cache (once per node), return its local path."""
    local = os.path.join(folder, name)
    if os.path.isfile(local):
        return local
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{name}-")
    with os.fdopen(fd, "wb") as out, store.fs.open_input_stream(store.path(POOLS, key, name)) as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            out.write(chunk)
    os.replace(tmp, local)  # atomic: another process of the node sees all or nothing
    return local


@functools.lru_cache(maxsize=2)
def _load_staged(store_root: str, key: str) -> loaders.ArrayDataset:
    store = ArtifactStore(store_root)
    folder = os.path.join(cache_dir(), key)
    # Memory-mapped read-only: the trainers of a node share one copy in the page cache.
    x, y = (np.load(_fetch(store, key, f"{part}.npy", folder), mmap_mode="r",
                    allow_pickle=False) for part in ("x", "y"))
    return loaders.ArrayDataset(x=x, y=y)
