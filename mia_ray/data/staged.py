"""Read a pool the driver staged in the storage, instead of from a data root.

A sweep's driver stages each dataset's pool into the artifact store
(:mod:`mia_ray.data.staging`) and the engine hands every spec it sends to a trainer or
a trial its pool's location (``DatasetSpec.staged``); the loader
(:func:`mia_ray.data.loaders.load_pool`) reads it here. The first read on a node copies
the files into a per-node cache folder (``MIA_RAY_POOL_CACHE``, default
``<tmp>/mia-ray-pools``) and every process of that node memory-maps the same copy.

This module reads only, and holds no state but that cache of reads; it never imports
the loaders, which import it.
"""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np

from mia_ray.specs import StagedPool
from mia_ray.store import ArtifactStore

POOLS = "pools"
CACHE_ENV = "MIA_RAY_POOL_CACHE"
CHUNK = 1 << 24


def read_staged(staged: StagedPool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the pool staged at ``staged``, memory-mapped from the node's cache."""
    x, y = _load_staged(staged.store_root, staged.key)
    return x, y


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
        for chunk in iter(lambda: f.read(CHUNK), b""):
            out.write(chunk)
    os.replace(tmp, local)  # atomic: another process of the node sees all or nothing
    return local


@functools.lru_cache(maxsize=4)
def _load_staged(store_root: str, key: str) -> tuple[np.ndarray, ...]:
    store = ArtifactStore(store_root)
    folder = os.path.join(cache_dir(), key)
    # Memory-mapped read-only: the trainers of a node share one copy in the page cache.
    return tuple(np.load(_fetch(store, key, name, folder), mmap_mode="r", allow_pickle=False)
                 for name in ("x.npy", "y.npy"))


def clear_cache() -> None:
    """Forget what this process read (tests, or a process switching storages)."""
    _load_staged.cache_clear()
