"""Datasets by path and architectures by reference, on tiny files this module writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mia_ray import cell as cell_cli
from mia_ray.data import check_available, load_pool
from mia_ray.errors import DatasetFileError, SpecError
from mia_ray.knowledge import CellSpec
from mia_ray.models import build_model
from mia_ray.resolution import resolve_arch, resolve_axes, resolve_dataset
from mia_ray.specs import AttackSpec, DatasetSpec, ModelSpec, PruneSpec, TrainSpec

# The user architectures live in their own module: a reference's key (and so every seed
# derived from it) hashes its module's source, which edits to this file must not change.
ARCH = "tests.user_archs:tiny_cnn"


def write_npz(path, features, labels):
    np.savez(path, features=features, labels=labels)
    return str(path)


# --- formats -------------------------------------------------------------------------

def test_npz_tabular_is_kept_as_is_and_named_by_its_stem(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), np.arange(40) % 3
    ds = resolve_dataset(write_npz(tmp_path / "clinic.npz", x, y))
    assert ds.name == "clinic" and ds.path == str(tmp_path / "clinic.npz")
    assert (ds.info.kind, ds.info.num_classes, ds.info.input_shape) == ("tabular", 3, (6,))
    pool = load_pool(ds)
    np.testing.assert_array_equal(pool.x, x.astype(np.float32))
    np.testing.assert_array_equal(pool.y, y)
    cell = CellSpec(dataset=ds, arch="fc", knowledge="original")
    assert cell.coordinates()["dataset"] == "clinic"


def test_edited_file_gets_a_new_key_and_the_stale_spec_refuses_to_load(tmp_path):
    path = write_npz(tmp_path / "t.npz", np.zeros((10, 2)), np.arange(10) % 2)
    before = resolve_dataset(path)
    assert resolve_dataset(path).key() == before.key()  # stable
    write_npz(tmp_path / "t.npz", np.ones((10, 2)), np.arange(10) % 2)
    after = resolve_dataset(path)
    assert after.key() != before.key()
    assert ModelSpec(dataset=after, arch="fc").key() != ModelSpec(dataset=before, arch="fc").key()
    with pytest.raises(DatasetFileError, match="changed since"):
        load_pool(before)


def test_built_in_keys_do_not_carry_the_new_fields():
    assert set(DatasetSpec().key_dict()) == {"type", "v", "name", "seed", "num_shadows"}


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhw"])
def test_npz_images_in_every_layout_give_the_same_standardised_pool(tmp_path, layout):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 3, 5, 4), dtype=np.uint8)  # N, C, H, W
    if layout == "nhw":
        images = images[:, :1]
    stored = {"nhwc": images.transpose(0, 2, 3, 1), "nchw": images, "nhw": images[:, 0]}[layout]
    ds = resolve_dataset(write_npz(tmp_path / "img.npz", stored, np.arange(12) % 4))
    assert ds.info.kind == "image" and ds.info.input_shape == images.shape[1:]
    x = load_pool(ds).x
    expected = images.astype(np.float32) / 255
    expected = (expected - expected.mean(axis=(0, 2, 3), keepdims=True)) / expected.std(
        axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_image_folder_classes_in_sorted_order_resized_to_the_first_image(tmp_path):
    folder = tmp_path / "pets"
    colours = {"b_dog": (0, 0, 255), "a_cat": (255, 0, 0)}
    for cls, colour in colours.items():
        (folder / cls).mkdir(parents=True)
        for i, size in enumerate([(6, 4), (8, 8)]):
            Image.new("RGB", size, colour).save(folder / cls / f"{i}.png")
    (folder / ".hidden").mkdir()
    ds = resolve_dataset(str(folder))
    assert ds.name == "pets" and ds.info.input_shape == (3, 4, 6)  # (C, H, W) of 6x4
    pool = load_pool(ds)
    np.testing.assert_array_equal(pool.y, [0, 0, 1, 1])  # a_cat, then b_dog
    red = pool.x[:, 0].mean(axis=(1, 2))
    assert red[0] > 0 > red[2]  # cats are red, standardised against the pool


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_with_label_column_and_string_labels(tmp_path, suffix):
    table = pd.DataFrame({"age": [30, 40, 50, 60], "dose": [1.5, 2.5, 3.5, 4.5],
                          "outcome": ["well", "ill", "well", "dead"]})
    path = tmp_path / f"trial{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    with pytest.raises(DatasetFileError, match="no label column 'label'"):
        resolve_dataset(str(path))
    ds = resolve_dataset(str(path), label_column="outcome")
    assert (ds.name, ds.info.num_classes, ds.info.input_shape) == ("trial", 3, (2,))
    pool = load_pool(ds)
    np.testing.assert_array_equal(pool.y, [2, 1, 2, 0])  # dead, ill, well
    np.testing.assert_array_equal(pool.x, table[["age", "dose"]].to_numpy(np.float32))
    assert "label_column" in ds.key_dict()


# --- bad input -----------------------------------------------------------------------

def test_unreadable_and_malformed_files_fail_with_one_message(tmp_path):
    garbage = tmp_path / "broken.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(DatasetFileError, match="broken.npz"):
        resolve_dataset(str(garbage))
    negative = write_npz(tmp_path / "neg.npz", np.zeros((4, 2)), np.array([0, 1, -1, 1]))
    with pytest.raises(DatasetFileError, match=r"label -1 at index 2"):
        resolve_dataset(negative)
    with pytest.raises(SpecError, match="or the path of an .npz"):
        resolve_dataset("imagenet")
    with pytest.raises(DatasetFileError, match="no such file"):
        resolve_dataset(str(tmp_path / "missing.csv"))


def test_purchase_npz_label_equal_to_class_count_fails_the_check_with_exit_2(tmp_path, capsys):
    labels = np.arange(5) % 100
    labels[3] = 100
    np.savez(tmp_path / "purchase100.npz", features=np.zeros((5, 600), np.float32),
             labels=labels)
    with pytest.raises(DatasetFileError, match="label 100 on index 3"):
        check_available(DatasetSpec(name="purchase100", root=str(tmp_path)))
    code = cell_cli.main(["--dataset", "purchase100", "--data-root", str(tmp_path),
                          "--arch", "fc", "--store", str(tmp_path / "s"),
                          "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "label 100" in err
    assert not (tmp_path / "s").exists()


# --- architectures by reference --------------------------------------------------------

def _digits_like(tmp_path, n=120):
    rng = np.random.default_rng(2)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32) + 3.0 * y[:, None, None, None]
    return resolve_dataset(write_npz(tmp_path / "blobs.npz", x, y), num_shadows=2)


def test_arch_reference_builds_seeded_and_its_key_carries_a_source_hash(tmp_path):
    ds = _digits_like(tmp_path)
    a, b = build_model(ARCH, ds, seed=3), build_model(ARCH, ds, seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    key = ModelSpec(dataset=ds, arch=resolve_arch(ARCH, [ds.info])).key_dict()["arch"]
    assert key.startswith(ARCH + "#") and len(key) == len(ARCH) + 13
    tv = build_model("torchvision.models:resnet18", ds, seed=0)
    assert tv(torch.zeros(2, 1, 6, 6)).shape == (2, 3)


def test_bad_arch_references_and_inapplicable_methods_fail_up_front(tmp_path):
    ds = _digits_like(tmp_path)
    with pytest.raises(SpecError, match="importing 'no_such_pkg.nets' failed"):
        resolve_arch("no_such_pkg.nets:net", [ds.info])
    with pytest.raises(SpecError, match="returned str, not an nn.Module"):
        resolve_arch("tests.user_archs:not_a_module", [ds.info])
    with pytest.raises(SpecError, match="with 3 outputs"):
        resolve_arch("tests.user_archs:wrong_outputs", [ds.info])
    arch = resolve_arch(ARCH, [ds.info])
    with pytest.raises(SpecError, match="no BatchNorm"):
        ModelSpec(dataset=ds, arch=arch, prune=PruneSpec("slimming", 0.5))
    ModelSpec(dataset=ds, arch=arch, prune=PruneSpec("l1_structured", 0.5))  # has a conv
    # A reference the specs were not given resolved is refused, never imported by them.
    with pytest.raises(SpecError, match="resolve_arch"):
        ModelSpec(dataset=ds, arch=ARCH)


@pytest.mark.parametrize("arch", ["tests.user_archs:conv_bn_net",
                                  "torchvision.models:resnet18"])
@pytest.mark.parametrize("method", ["l1_unstructured", "l1_structured", "l2_structured",
                                    "slimming"])
def test_every_pruning_method_applies_to_referenced_architectures(tmp_path, arch, method):
    from mia_ray.pruning import make_permanent, measured_sparsity, prune_model

    ds = _digits_like(tmp_path)
    ModelSpec(dataset=ds, arch=resolve_arch(arch, [ds.info]),
              prune=PruneSpec(method, 0.5))  # admitted up front
    model = build_model(arch, ds, seed=0)
    prune_model(model, PruneSpec(method, 0.5))
    assert measured_sparsity(model, method) == pytest.approx(0.5, abs=0.02)
    make_permanent(model)
    fresh = build_model(arch, ds, seed=1)
    fresh.load_state_dict(model.state_dict())  # the plain layout the store keeps


@pytest.mark.slow
def test_custom_arch_on_custom_data_runs_a_cell_end_to_end(tmp_path):
    from mia_ray.evaluation import run_cell
    from mia_ray.results import ResultTables
    from mia_ray.store import ArtifactStore

    # Enough samples and steps that the blobs are learned whatever the seeds: at 120
    # samples and batch 128 (one step an epoch, a dev split of 6) the victim's accuracy
    # was a draw of its key-derived seed (0.30 to 0.56 across keys).
    quick = TrainSpec(max_epochs=30, patience=10, batch_size=16)
    dataset = _digits_like(tmp_path, n=300)
    cell = CellSpec(dataset=dataset, arch=resolve_arch(ARCH, [dataset.info]), knowledge="full",
                    prune=PruneSpec("l1_structured", 0.5), train=quick, finetune=quick,
                    attacks=AttackSpec(names=("conf", "nn", "lira"), epochs=2))
    results = ResultTables(str(tmp_path / "results"))
    rows = run_cell(cell, ArtifactStore(str(tmp_path / "store")), results)
    assert [r["attack"] for r in rows] == ["conf", "nn", "lira"]
    assert all(r["dataset"] == "blobs" and r["arch"] == ARCH for r in rows)
    assert all(0.0 <= r["auc"] <= 1.0 for r in rows)
    assert rows[0]["victim_sparsity"] == pytest.approx(0.5)
    assert rows[0]["victim_test_acc"] > 0.5  # three shifted blobs are easy; chance is 1/3


def test_grid_takes_a_dataset_path_and_an_arch_reference(tmp_path):
    from mia_ray.grid import GridSpec

    path = _digits_like(tmp_path).path
    grid = GridSpec(datasets=(path,), **resolve_axes((path,), (ARCH,)), sparsities=(0.5,),
                    knowledge=("full",), defenses=("none",), num_shadows=2)
    assert {c.dataset.name for c in grid.cells()} == {"blobs"}
    # tiny_cnn has no BatchNorm: slimming is skipped for it, the other three remain
    assert sorted(c.prune.method for c in grid.cells()) == [
        "l1_structured", "l1_unstructured", "l2_structured"]
    with pytest.raises(SpecError, match="or the path of an .npz"):
        GridSpec(datasets=("imagenet",))
    with pytest.raises(SpecError, match="or the path of an .npz"):
        resolve_axes(("imagenet",), ("auto",))
    with pytest.raises(SpecError, match="or the path of an .npz"):
        GridSpec(datasets=(path,))  # a path the grid was not given resolved
    with pytest.raises(SpecError, match="'package.module:function'"):
        GridSpec(archs=("transformer",))


# --- the user's route: a sweep on a local Ray ------------------------------------------

@pytest.mark.slow
def test_every_by_path_format_runs_through_a_sweep_on_a_local_ray(tmp_path, ray_session,
                                                                 monkeypatch):
    """sweeps/small_grid.py with five by-path datasets (none a built-in name), a by-path
    digits.npz that is not the built-in digits, and the built-in digits, in one sweep:
    each file is staged as its own pool and audited as its own dataset, and the by-path
    digits.npz is not mistaken for the built-in digits (a pool keyed by name alone
    would give the two digits cells one pool and one size). Plumbing, not a result: the
    script's own --smoke-test budget (8 epochs) instead of each dataset's reference
    budget (up to 100 epochs), which nothing here measures, and two trainers (--trainers)
    rather than enough to fill the session's Ray."""
    from test_engine import load_script
    from test_staging import write_by_path_sets

    from mia_ray.data.staged import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "node-cache"))
    paths = write_by_path_sets(tmp_path / "mine")
    digits = load_pool(DatasetSpec(name="digits"))
    own = np.rint((digits.x[:300, 0] - digits.x.min()) * 10).astype(np.uint8)
    np.savez(tmp_path / "mine" / "digits.npz", features=own, labels=digits.y[:300])
    datasets = [*paths.values(), str(tmp_path / "mine" / "digits.npz"), "digits"]
    storage = tmp_path / "results"
    code = load_script("small_grid").main([
        "--smoke-test", "--datasets", ",".join(datasets), "--archs", "fc", "--seeds", "0",
        "--knowledge", "original", "--shadows", "1", "--attacks", "conf,mentr",
        "--trainers", "2", "--storage", str(storage), "--no-report"])
    assert code == 0
    rows = pd.read_parquet(storage / "attacks")
    assert len(rows) == 2 * 7 and not rows.duplicated(["cell_key", "attack"]).any()
    assert sorted(set(rows.dataset)) == sorted([*paths, "digits"])
    assert rows.groupby("dataset").cell_key.nunique().to_dict()["digits"] == 2
    assert rows.auc.between(0, 1).all() and rows.victim_test_acc.notna().all()
    # The two digits cells audit their own pools: the built-in 1797 samples, the file's 300
    digit_rows = rows[rows.dataset == "digits"]
    assert sorted(set(digit_rows.n_members + digit_rows.n_nonmembers)) == sorted(
        {2 * n for n in digit_rows.n_members})
    sizes = sorted(set(digit_rows.n_members))
    assert sizes[0] < 300 // 2 < sizes[1] < 1797 // 2
    pools = sorted(p.name.split("-")[0] for p in (storage / "artifacts" / "pools").iterdir()
                   if p.name != "index")
    assert pools == sorted([*paths, "digits", "digits"])
