"""What a sweep's processes read from the storage instead of a data root.

The driver stages each dataset's pool, and an audit's member set, into the artifact
store (:mod:`mia_ray.data.staging`) and hands trainers and trials the map {pool id:
staged key} (:func:`use`). Here those processes find them: the generic pool loader
(:func:`mia_ray.data.loaders.load_pool`) asks :func:`staged_arrays` first, the audit's
split asks :func:`staged_members`. The first read on a node copies the files into a
per-node cache folder (``MIA_RAY_POOL_CACHE``, default ``<tmp>/mia-ray-pools``) and
every process of that node memory-maps the same copy.

This module reads only; it never imports the loaders, which import it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile

import numpy as np

from mia_ray.specs import DatasetSpec, canonical_json
from mia_ray.store import ArtifactStore

POOLS = "pools"
# An audit's member indices, content-addressed by their hash (DatasetSpec.members).
MEMBERS = "members"
CACHE_ENV = "MIA_RAY_POOL_CACHE"
CHUNK = 1 << 24

# This process's staged pools: set by use() in trainers and trials.
_active: dict[str, object] = {"root": None, "pools": {}}


def pool_id(dataset: DatasetSpec) -> str:
    """What names a pool apart from where its files are: the dataset's key without the
    seed (which only shuffles the pool) and K (which only counts shadow splits)."""
    fields = {k: v for k, v in dataset.key_dict().items()
              if k not in ("seed", "num_shadows", "v")}
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:16]


def use(store_root: str, pools: dict[str, str]) -> None:
    """Make this process load these pools (and member sets) from the storage."""
    _active["root"] = store_root
    _active["pools"] = dict(pools)


def staged_arrays(dataset: DatasetSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """(x, y) of this dataset's staged pool, if this process was told about one."""
    key = _active["pools"].get(pool_id(dataset))  # type: ignore[union-attr]
    if key is None:
        return None
    return _load_staged(str(_active["root"]), POOLS, key, ("x.npy", "y.npy"))


def staged_members(digest: str) -> np.ndarray | None:
    """The member indices staged under ``digest``, if this process reads a storage."""
    if not _active["root"]:
        return None
    store = ArtifactStore(str(_active["root"]))
    if not store.has(MEMBERS, digest):
        return None
    (idx,) = _load_staged(str(_active["root"]), MEMBERS, digest, ("members.npy",))
    return idx


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "mia-ray-pools")


def _fetch(store: ArtifactStore, kind: str, key: str, name: str, folder: str) -> str:
    """Copy one staged file into the node's cache (once per node), return its local path."""
    local = os.path.join(folder, name)
    if os.path.isfile(local):
        return local
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{name}-")
    with os.fdopen(fd, "wb") as out, store.fs.open_input_stream(store.path(kind, key, name)) as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            out.write(chunk)
    os.replace(tmp, local)  # atomic: another process of the node sees all or nothing
    return local


@functools.lru_cache(maxsize=4)
def _load_staged(store_root: str, kind: str, key: str, names: tuple[str, ...]
                 ) -> tuple[np.ndarray, ...]:
    store = ArtifactStore(store_root)
    folder = os.path.join(cache_dir(), key if kind == POOLS else f"{kind}-{key}")
    # Memory-mapped read-only: the trainers of a node share one copy in the page cache.
    return tuple(np.load(_fetch(store, kind, key, name, folder), mmap_mode="r",
                         allow_pickle=False) for name in names)


def clear_cache() -> None:
    """Forget what this process read (tests, or a process switching storages)."""
    _load_staged.cache_clear()
