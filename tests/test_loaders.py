"""Every loader on tiny files written in its documented format; nothing is downloaded."""

import os
import socket

import numpy as np
import pytest
import torchvision.datasets.utils as tv_utils

from mia_ray.catalog import DATASETS
from mia_ray.data import ArrayDataset, check_available, expected_files, load_pool
from mia_ray.data.loaders import clear_cache
from mia_ray.errors import DatasetFileError
from mia_ray.specs import DatasetSpec

# The authors' constants: CIFAR-10's std is (0.2023, 0.1994, 0.2010), and CIFAR-100
# reuses CIFAR-10's mean and std.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to reach the network fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tv_utils, "download_url", refuse)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", refuse)
    clear_cache()
    yield
    clear_cache()


def spec(name, root, **kw):
    return DatasetSpec(name=name, root=str(root), **kw)


def check_pool(ds: ArrayDataset, name: str, n: int):
    info = DATASETS[name]
    assert ds.x.shape == (n, *info.input_shape) and ds.x.dtype == np.float32
    assert ds.y.shape == (n,) and ds.y.dtype == np.int64
    assert ds.y.min() >= 0 and ds.y.max() < info.num_classes


# --- CIFAR (binary release) -----------------------------------------------------

def cifar_records(labels, label_bytes=1, pixel=None):
    recs = np.zeros((len(labels), label_bytes + 3072), dtype=np.uint8)
    for i, lab in enumerate(labels):
        recs[i, :label_bytes] = lab
        recs[i, label_bytes:] = (i * 7) % 256 if pixel is None else pixel
    return recs.tobytes()


def write_cifar10(root, per_file=2):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        labels = [(b + k) % 10 for k in range(per_file)]
        (folder / f"data_batch_{b}.bin").write_bytes(cifar_records(labels))
    (folder / "test_batch.bin").write_bytes(cifar_records([9, 0, 3]))


def test_cifar10_binary_train_then_test(tmp_path):
    write_cifar10(tmp_path)
    ds = load_pool(spec("cifar10", tmp_path))
    check_pool(ds, "cifar10", 13)
    assert ds.y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 9, 0, 3]
    # Record 1 of each file has every pixel byte 7: check the per-channel normalisation.
    for c in range(3):
        want = (7 / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        assert np.allclose(ds.x[1, c], want, atol=1e-6)


def test_cifar10_channel_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rec = np.zeros(3073, dtype=np.uint8)
    rec[1:1025], rec[1025:2049], rec[2049:] = 255, 0, 128  # R, G, B planes
    for f in [f"data_batch_{b}.bin" for b in range(1, 6)] + ["test_batch.bin"]:
        (folder / f).write_bytes(rec.tobytes())
    x = load_pool(spec("cifar10", tmp_path)).x
    assert x[0, 0].min() > 1.5 and x[0, 1].max() < -1.5 and abs(x[0, 2].mean()) < 0.3


def test_cifar100_uses_fine_label(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train = np.frombuffer(cifar_records([0, 0, 0], label_bytes=2), np.uint8).reshape(3, -1).copy()
    train[:, 0] = 19          # coarse
    train[:, 1] = [5, 99, 42]  # fine
    (folder / "train.bin").write_bytes(train.tobytes())
    (folder / "test.bin").write_bytes(cifar_records([7], label_bytes=2))
    ds = load_pool(spec("cifar100", tmp_path))
    check_pool(ds, "cifar100", 4)
    assert ds.y.tolist() == [5, 99, 42, 7]
    # Record 1 of train.bin has every pixel byte 7, normalised with CIFAR-10's constants.
    for c in range(3):
        assert np.allclose(ds.x[1, c], (7 / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c], atol=1e-6)


def test_cifar_missing_file_names_path_and_url(tmp_path):
    write_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin")
    with pytest.raises(DatasetFileError) as e:
        check_available(spec("cifar10", tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin") in msg
    assert "cifar-10-binary.tar.gz" in msg and "--download" in msg


def test_cifar_python_release_is_not_read(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(DatasetFileError, match="cifar-10-batches-bin"):
        load_pool(spec("cifar10", tmp_path))


def test_cifar_wrong_size_and_bad_label(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(cifar_records([1]) + b"\x00")
    with pytest.raises(DatasetFileError, match="not a multiple of the 3073-byte record"):
        check_available(spec("cifar10", tmp_path))
    path.write_bytes(cifar_records([10]))
    with pytest.raises(DatasetFileError, match="label 10, outside 0..9"):
        load_pool(spec("cifar10", tmp_path))


def test_cifar_download_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, **kw):
        calls.append(url)
        write_cifar10(tmp_path)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    with pytest.raises(DatasetFileError):
        check_available(spec("cifar10", tmp_path))
    assert calls == []
    check_available(spec("cifar10", tmp_path, download=True))
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    check_available(spec("cifar10", tmp_path, download=True))  # present: no second fetch
    assert len(calls) == 1


# --- SVHN -----------------------------------------------------------------------

def write_svhn(root, train_labels=(1, 10, 5), test_labels=(10, 2)):
    from scipy.io import savemat

    folder = root / "svhn"
    folder.mkdir()
    for fname, labels in (("train_32x32.mat", train_labels), ("test_32x32.mat", test_labels)):
        x = np.zeros((32, 32, 3, len(labels)), dtype=np.uint8)
        x[:, :, 0, :] = 200  # red plane
        savemat(folder / fname, {"X": x, "y": np.array(labels, dtype=np.uint8)[:, None]})


def test_svhn_mat_labels_and_layout(tmp_path):
    write_svhn(tmp_path)
    ds = load_pool(spec("svhn", tmp_path))
    check_pool(ds, "svhn", 5)
    assert ds.y.tolist() == [1, 0, 5, 0, 2]
    assert ds.x[:, 0].min() > ds.x[:, 1].max()  # red channel lands on channel 0
    # Mean and std 0.5 on every channel: bytes 200 and 0 map to 200 / 127.5 - 1 and -1.
    assert np.allclose(ds.x[:, 0], 200 / 127.5 - 1, atol=1e-6)
    assert np.allclose(ds.x[:, 1:], -1.0)


def test_svhn_missing_and_bad_label(tmp_path):
    with pytest.raises(DatasetFileError, match="train_32x32.mat") as e:
        check_available(spec("svhn", tmp_path))
    assert "ufldl.stanford.edu/housenumbers" in str(e.value)
    write_svhn(tmp_path, test_labels=(11,))
    with pytest.raises(DatasetFileError, match="outside 1..10"):
        load_pool(spec("svhn", tmp_path))


def test_svhn_not_a_mat_file(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"<html>Not Found</html>")
    with pytest.raises(DatasetFileError, match="not a MATLAB 5.0"):
        check_available(spec("svhn", tmp_path))


# --- CHMNIST ----------------------------------------------------------------------

CHMNIST_CLASSES = ["01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS",
                   "06_MUCOSA", "07_ADIPOSE", "08_EMPTY"]


def write_chmnist(root, classes=CHMNIST_CLASSES):
    from PIL import Image

    for k, c in enumerate(classes):
        folder = root / "chmnist" / c
        folder.mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (40, 40), (k * 30, 255 - k * 30, 100)).save(folder / f"t{j}.png")


def test_chmnist_folders(tmp_path):
    write_chmnist(tmp_path)
    (tmp_path / "chmnist" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    ds = load_pool(spec("chmnist", tmp_path))
    check_pool(ds, "chmnist", 16)
    assert ds.y.tolist() == [k for k in range(8) for _ in range(2)]
    want = (3 * 30 / 255 - 0.485) / 0.229  # class 3's red value, ImageNet-normalised
    assert np.allclose(ds.x[6, 0], want, atol=1e-5)


def test_chmnist_needs_eight_classes(tmp_path):
    write_chmnist(tmp_path, CHMNIST_CLASSES[:7])
    with pytest.raises(DatasetFileError, match="found 7 class folders"):
        check_available(spec("chmnist", tmp_path))


def test_chmnist_missing_folder(tmp_path):
    with pytest.raises(DatasetFileError, match="zenodo") as e:
        check_available(spec("chmnist", tmp_path))
    assert str(tmp_path / "chmnist") in str(e.value)


# --- tabular ----------------------------------------------------------------------

TABULAR = {"purchase100": (600, 100), "texas100": (6169, 100), "location": (446, 30)}


def tabular_data(name, n=5):
    d, c = TABULAR[name]
    rng = np.random.default_rng(0)
    features = rng.integers(0, 2, size=(n, d)).astype(np.float32)
    labels = np.array([0, c - 1, 3, 1, 2][:n], dtype=np.int64)
    return features, labels


def write_text(root, name, features, labels_1based, quote=False):
    folder = root / name
    folder.mkdir(exist_ok=True)
    rows = [",".join(str(int(v)) for v in row) for row in features]
    labs = [f'"{lab}"' if quote else str(lab) for lab in labels_1based]
    if name == "texas100":
        (folder / "feats").write_text("\n".join(rows) + "\n")
        (folder / "labels").write_text("\n".join(labs) + "\n")
    else:
        fname = "dataset_purchase" if name == "purchase100" else "bangkok"
        (folder / fname).write_text("\n".join(f"{lab},{r}" for lab, r in zip(labs, rows)) + "\n")
    return folder


@pytest.mark.parametrize("name", TABULAR)
def test_tabular_npz(tmp_path, name):
    features, labels = tabular_data(name)
    np.savez(tmp_path / f"{name}.npz", features=features, labels=labels)
    check_available(spec(name, tmp_path))
    ds = load_pool(spec(name, tmp_path))
    check_pool(ds, name, 5)
    assert np.array_equal(ds.x, features) and np.array_equal(ds.y, labels)


@pytest.mark.parametrize("name", TABULAR)
def test_tabular_text_release(tmp_path, name):
    features, labels = tabular_data(name)
    write_text(tmp_path, name, features, labels + 1, quote=(name == "location"))
    check_available(spec(name, tmp_path))
    ds = load_pool(spec(name, tmp_path))
    check_pool(ds, name, 5)
    assert np.array_equal(ds.x, features) and np.array_equal(ds.y, labels)


def test_npz_is_preferred_over_text(tmp_path):
    features, labels = tabular_data("location")
    write_text(tmp_path, "location", features, labels + 1)
    np.savez(tmp_path / "location.npz", features=features[:2], labels=labels[:2])
    assert len(load_pool(spec("location", tmp_path))) == 2


def test_npz_one_hot_labels(tmp_path):
    features, labels = tabular_data("location")
    np.savez(tmp_path / "location.npz", features=features, labels=np.eye(30)[labels])
    assert np.array_equal(load_pool(spec("location", tmp_path)).y, labels)


def test_tabular_missing_names_both_formats(tmp_path):
    with pytest.raises(DatasetFileError) as e:
        check_available(spec("texas100", tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "texas100" / "feats") in msg and "texas100.npz" in msg
    assert expected_files("texas100", str(tmp_path))[0] == str(tmp_path / "texas100.npz")


def test_text_wrong_column_count(tmp_path):
    features, labels = tabular_data("purchase100")
    folder = write_text(tmp_path, "purchase100", features[:, :599], labels + 1)
    with pytest.raises(DatasetFileError, match="line 1 has 600 comma-separated fields, "
                                               "expected 601"):
        check_available(spec("purchase100", tmp_path))
    lines = (folder / "dataset_purchase").read_text().splitlines()
    good = write_text(tmp_path, "purchase100", features, labels + 1) / "dataset_purchase"
    good_lines = good.read_text().splitlines()
    good.write_text("\n".join(good_lines[:2] + [lines[2]] + good_lines[3:]) + "\n")
    with pytest.raises(DatasetFileError, match="line 3 has 600 comma-separated fields, "
                                               "expected 601"):
        load_pool(spec("purchase100", tmp_path))
    good.write_text("\n".join(good_lines[:3] + ["7," + "0," * 599 + "yes"]) + "\n")
    with pytest.raises(DatasetFileError, match="line 4, field 601 is 'yes', not a number"):
        load_pool(spec("purchase100", tmp_path))


@pytest.mark.parametrize("bad", [0, 31])
def test_text_label_out_of_range(tmp_path, bad):
    features, labels = tabular_data("location")
    write_text(tmp_path, "location", features, [1, bad, 2, 3, 4])
    with pytest.raises(DatasetFileError, match=f"label {bad} on line 2 is not an integer "
                                               "in 1..30"):
        load_pool(spec("location", tmp_path))


def test_texas_length_mismatch(tmp_path):
    features, labels = tabular_data("texas100")
    folder = write_text(tmp_path, "texas100", features, labels + 1)
    (folder / "labels").write_text("1\n2\n3\n")
    with pytest.raises(DatasetFileError, match="3 labels for the 5 feature lines"):
        load_pool(spec("texas100", tmp_path))


def test_empty_text_file(tmp_path):
    (tmp_path / "location").mkdir()
    (tmp_path / "location" / "bangkok").write_text("")
    with pytest.raises(DatasetFileError, match="file is empty"):
        check_available(spec("location", tmp_path))


@pytest.mark.parametrize("arrays, problem", [
    ({"features": np.zeros((3, 445)), "labels": np.zeros(3)}, r"shape \(3, 445\)"),
    ({"features": np.zeros((3, 446)), "labels": np.zeros(4)}, "match the 3 feature rows"),
    ({"features": np.zeros((3, 446))}, "'labels'"),
    ({"features": np.zeros((3, 446)), "labels": np.array([0, 30, 1])}, "label 30 on index 1"),
    ({"features": np.zeros((3, 446)), "labels": np.array(["a", "b", "c"], dtype=object)},
     "labels"),
])
def test_malformed_npz(tmp_path, arrays, problem):
    np.savez(tmp_path / "location.npz", **arrays)
    with pytest.raises(DatasetFileError, match=problem):
        load_pool(spec("location", tmp_path))


# --- digits and the cache -----------------------------------------------------------

def test_digits(tmp_path):
    check_available(spec("digits", tmp_path / "nowhere"))
    ds = load_pool(spec("digits", tmp_path / "nowhere"))
    check_pool(ds, "digits", 1797)
    assert set(ds.y.tolist()) == set(range(10))
    assert abs(ds.x.mean()) < 1e-4 and abs(ds.x.std() - 1) < 1e-4


def test_pool_is_cached_and_read_only(tmp_path):
    a = load_pool(spec("digits", tmp_path))
    assert load_pool(spec("digits", tmp_path, seed=7)) is a
    with pytest.raises(ValueError):
        a.x[0, 0, 0, 0] = 1.0


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "chmnist", *TABULAR])
def test_missing_files_never_download(tmp_path, name):
    with pytest.raises(DatasetFileError) as e:
        load_pool(spec(name, tmp_path))
    assert str(tmp_path) in str(e.value)
