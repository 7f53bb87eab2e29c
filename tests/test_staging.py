"""Datasets staged through the storage: written once by content, read on any node."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mia_ray.data import loaders, staging
from mia_ray.errors import DatasetFileError
from mia_ray.specs import DatasetSpec


def write_location(root, n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny Location-shaped npz (446 binary features, 30 classes)."""
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 2, size=(n, 446)).astype(np.float32)
    labels = rng.integers(0, 30, size=n).astype(np.int64)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "location.npz", features=features, labels=labels)
    return features, labels


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh node cache and no staged pools or cached reads from other tests."""
    monkeypatch.setenv(staging.CACHE_ENV, str(tmp_path / "node-cache"))
    staging.use("", {})
    staging._load_staged.cache_clear()
    loaders.clear_cache()
    yield
    staging.use("", {})
    staging._load_staged.cache_clear()
    loaders.clear_cache()


def test_a_pool_is_staged_once_by_content_and_read_from_the_node_cache(tmp_path):
    features, labels = write_location(tmp_path / "data")
    dataset = DatasetSpec(name="location", root=str(tmp_path / "data"))
    store_root = str(tmp_path / "storage" / "artifacts")
    key = staging.stage_pool(dataset, store_root)
    folder = tmp_path / "storage" / "artifacts" / "pools" / key
    assert key.startswith("location-") and sorted(p.name for p in folder.iterdir()) == [
        "meta.json", "x.npy", "y.npy"]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # Another seed and another K are the same pool: staged once, nothing rewritten.
    again = staging.stage_pools([DatasetSpec(name="location", root=str(tmp_path / "data"),
                                             seed=3, num_shadows=7), dataset], store_root)
    assert again == {staging.pool_id(dataset): key}
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps

    shutil.rmtree(tmp_path / "data")  # the node has no dataset files from here on
    staging.use(store_root, again)
    pool = loaders.load_pool(dataset)
    assert np.array_equal(pool.x, features) and np.array_equal(pool.y, labels)
    assert pool.x.dtype == np.float32 and pool.y.dtype == np.int64
    assert not pool.x.flags.writeable  # a shared, read-only memory map of the cached copy
    cached = tmp_path / "node-cache" / key
    assert sorted(p.name for p in cached.iterdir()) == ["x.npy", "y.npy"]
    np.load(cached / "x.npy", allow_pickle=False)  # plain arrays, no pickle inside


def test_an_edited_file_is_staged_again_under_a_new_key(tmp_path):
    write_location(tmp_path / "data", seed=0)
    dataset = DatasetSpec(name="location", root=str(tmp_path / "data"))
    store_root = str(tmp_path / "artifacts")
    first = staging.stage_pool(dataset, store_root)
    _, labels = write_location(tmp_path / "data", seed=1)
    loaders.clear_cache()
    second = staging.stage_pool(dataset, store_root)
    assert second != first
    assert staging.find_staged(dataset, store_root) == second  # the index follows the files
    staging.use(store_root, {staging.pool_id(dataset): second})
    assert np.array_equal(loaders.load_pool(dataset).y, labels)


def test_a_driver_without_files_uses_the_staged_copy_or_says_what_is_missing(tmp_path):
    store_root = str(tmp_path / "artifacts")
    empty = DatasetSpec(name="location", root=str(tmp_path / "empty"))
    with pytest.raises(DatasetFileError, match="location.npz"):
        staging.check_source(empty, store_root)
    with pytest.raises(DatasetFileError, match="location.npz"):
        staging.stage_pools([empty], store_root)
    write_location(tmp_path / "data")
    key = staging.stage_pool(DatasetSpec(name="location", root=str(tmp_path / "data")),
                             store_root)
    staging.check_source(empty, store_root)  # no error: the storage has it
    assert staging.stage_pools([empty], store_root) == {staging.pool_id(empty): key}


def test_bundled_digits_are_staged_by_their_arrays(tmp_path):
    dataset = DatasetSpec(name="digits")
    store_root = str(tmp_path / "artifacts")
    key = staging.stage_pool(dataset, store_root)
    assert key == staging.stage_pool(dataset, store_root)
    staging.use(store_root, {staging.pool_id(dataset): key})
    staged = loaders.load_pool(dataset)
    staging.use("", {})
    local = loaders.load_pool(dataset)
    assert staged.x.shape == (1797, 1, 8, 8) and np.array_equal(staged.x, local.x)


def test_a_dataset_given_by_path_is_staged_by_its_file(tmp_path):
    # Before: staging asked the named-dataset table for 'blobs' and refused the sweep.
    path = tmp_path / "blobs.npz"
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.normal(size=(60, 4)).astype(np.float32),
             labels=rng.integers(0, 3, 60))
    store_root = str(tmp_path / "artifacts")
    first = staging.stage_pool(DatasetSpec(name=str(path)), store_root)
    np.savez(path, features=rng.normal(size=(60, 4)).astype(np.float32),
             labels=rng.integers(0, 3, 60))
    loaders.clear_cache()
    assert staging.stage_pool(DatasetSpec(name=str(path)), store_root) != first
