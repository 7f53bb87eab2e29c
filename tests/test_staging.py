"""Datasets staged through the storage: written once by content, read on any node."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mia_ray.data import loaders, staged, staging
from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.resolution import resolve_dataset, resolve_members
from mia_ray.specs import DatasetSpec, ModelSpec
from mia_ray.store import ArtifactStore


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
    """A fresh node cache and no cached reads from other tests."""
    monkeypatch.setenv(staged.CACHE_ENV, str(tmp_path / "node-cache"))
    staged.clear_cache()
    loaders.clear_cache()
    yield
    staged.clear_cache()
    loaders.clear_cache()


def at(dataset: DatasetSpec, store_root: str, pools: dict[str, str]) -> DatasetSpec:
    """The dataset as a sweep's trainers and trials get it: with its staged location."""
    (model,) = staging.located([ModelSpec(dataset=dataset, arch="fc")], store_root, pools)
    return model.dataset


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
    assert again == {dataset.pool_id: key}
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps

    shutil.rmtree(tmp_path / "data")  # the node has no dataset files from here on
    pool = loaders.load_pool(at(dataset, store_root, again))
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
    located = at(dataset, store_root, {dataset.pool_id: second})
    assert located.staged.key == second and located == dataset  # same spec, same key
    assert np.array_equal(loaders.load_pool(located).y, labels)


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
    assert staging.stage_pools([empty], store_root) == {empty.pool_id: key}


def test_bundled_digits_are_staged_by_their_arrays(tmp_path):
    dataset = DatasetSpec(name="digits")
    store_root = str(tmp_path / "artifacts")
    key = staging.stage_pool(dataset, store_root)
    assert key == staging.stage_pool(dataset, store_root)
    from_storage = loaders.load_pool(at(dataset, store_root, {dataset.pool_id: key}))
    local = loaders.load_pool(dataset)
    assert from_storage.x.shape == (1797, 1, 8, 8) and np.array_equal(from_storage.x, local.x)


# --- datasets by path, and an audit's member set ----------------------------------

def write_by_path_sets(folder) -> dict[str, str]:
    """One tiny dataset per by-path format, each under a stem no built-in set has."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    y = np.arange(40) % 2
    np.savez(folder / "gauss.npz", features=rng.normal(size=(40, 5)) + y[:, None], labels=y)
    np.savez(folder / "glyphs.npz", labels=y,
             features=rng.integers(0, 256, size=(40, 6, 6, 1), dtype=np.uint8))
    for cls in ("circle", "square"):
        (folder / "shapes" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8)).save(
                folder / "shapes" / cls / f"{i}.png")
    table = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40), "label": y})
    table.to_csv(folder / "survey.csv", index=False)
    table.to_parquet(folder / "sales.parquet")
    return {stem: str(folder / name) for stem, name in [
        ("gauss", "gauss.npz"), ("glyphs", "glyphs.npz"), ("shapes", "shapes"),
        ("survey", "survey.csv"), ("sales", "sales.parquet")]}


def test_every_by_path_format_is_staged_by_its_own_files_and_read_back(tmp_path):
    store_root = str(tmp_path / "artifacts")
    for stem, path in write_by_path_sets(tmp_path / "mine").items():
        dataset = resolve_dataset(path)
        key = staging.stage_pool(dataset, store_root)  # before the fix: SpecError(stem)
        assert key.startswith(stem + "-")
        sources = ArtifactStore(store_root).meta("pools", key)["sources"]
        images = sorted(f"{i}.png" for i in range(12))  # names in sorted order: 0, 1, 10, ...
        expected = ([f"{c}/{f}" for c in ("circle", "square") for f in images]
                    if stem == "shapes" else [os.path.basename(path)])
        assert sources == expected
        local = loaders.load_pool(dataset)
        from_storage = loaders.load_pool(at(dataset, store_root, {dataset.pool_id: key}))
        assert np.array_equal(from_storage.x, local.x) and np.array_equal(from_storage.y,
                                                                           local.y)
    # One image of the folder edited: a new content hash, so a new staged copy.
    shapes = os.path.join(tmp_path, "mine", "shapes")
    before = staging.stage_pool(resolve_dataset(shapes), store_root)
    Image.new("RGB", (5, 5), (0, 0, 0)).save(os.path.join(shapes, "square", "11.png"))
    after = staging.stage_pool(resolve_dataset(shapes), store_root)
    assert after != before and after.startswith("shapes-")


def test_a_digits_npz_by_path_is_never_taken_for_the_built_in_digits(tmp_path):
    built_in = DatasetSpec(name="digits")
    pool = loaders.load_pool(built_in)
    # The user's own digits: 300 of them, 8x8 greyscale, as a by-path npz
    images = np.rint((pool.x[:300, 0] - pool.x.min()) * 10).astype(np.uint8)
    np.savez(tmp_path / "digits.npz", features=images, labels=pool.y[:300])
    mine = resolve_dataset(str(tmp_path / "digits.npz"))
    assert mine.name == "digits" and mine.path and mine.key() != built_in.key()
    assert mine.pool_id != built_in.pool_id
    store_root = str(tmp_path / "artifacts")
    keys = staging.stage_pools([built_in, mine], store_root)
    assert len(set(keys.values())) == 2
    meta = ArtifactStore(store_root).meta("pools", keys[mine.pool_id])
    assert meta["sources"] == ["digits.npz"] and meta["n"] == 300
    assert ArtifactStore(store_root).meta("pools", keys[built_in.pool_id])["n"] == 1797
    assert len(loaders.load_pool(at(mine, store_root, keys)).y) == 300
    assert len(loaders.load_pool(at(built_in, store_root, keys)).y) == 1797
    # Staged a second time from another driver: each finds its own copy again.
    assert staging.find_staged(mine, store_root) == keys[mine.pool_id]
    assert staging.find_staged(built_in, store_root) == keys[built_in.pool_id]


def test_an_audits_member_set_is_read_once_and_travels_in_its_specs(tmp_path):
    from mia_ray.data import split_for
    from mia_ray.data.members import members_hash

    path = write_by_path_sets(tmp_path / "mine")["gauss"]
    members = np.arange(0, 40, 3)
    np.save(tmp_path / "members.npy", members)
    audit = resolve_members(resolve_dataset(path), str(tmp_path / "members.npy"))
    assert audit.members == members_hash(members)
    expected = split_for(audit, "victim", 0, 40)
    np.testing.assert_array_equal(expected.train, members)
    store_root = str(tmp_path / "artifacts")
    keys = staging.stage_pools([audit], store_root)
    (tmp_path / "members.npy").unlink()  # what a worker node sees: no member file
    (located,) = staging.located([ModelSpec(dataset=audit, arch="fc")], store_root, keys)
    assert split_for(located.dataset, "victim", 0, 40) == expected
    assert split_for(located.dataset, "shadow", 1, 40) == split_for(audit, "shadow", 1, 40)
    # A spec that carries the hash but not the indices is refused, never read from a file.
    with pytest.raises(SpecError, match="members"):
        split_for(dataclasses.replace(audit, member_indices=None), "victim", 0, 40)
