"""MNIST-1D, the built-in dataset generated offline: shape, determinism, signal, no network."""

import random
import socket

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mia_ray.data import check_available, load_pool
from mia_ray.data.loaders import clear_cache
from mia_ray.data.loaders_mnist1d import generate
from mia_ray.specs import DatasetSpec, TrainSpec, epoch_budgets


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The generator must never reach the network (the package can download a pickle)."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    clear_cache()
    yield
    clear_cache()


def test_two_generations_are_identical_and_leave_the_global_rng_alone():
    np.random.seed(7)
    random.seed(7)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(7)
    random.seed(7)
    x1, y1 = generate(num_samples=200)
    x2, y2 = generate(num_samples=200)
    # The caller's global streams go on as if the generator had never run.
    assert np.random.rand() == expected_np and random.random() == expected_py
    assert x1.shape == (200, 40) and x1.dtype == np.float32
    assert y1.shape == (200,) and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    # 20 per class: the generator makes num_samples // 10 of each.
    assert np.bincount(y1).tolist() == [20] * 10
    x3, _ = generate(num_samples=200, seed=43)
    assert not np.array_equal(x1, x3)


def test_the_built_in_pool_has_learnable_signal(tmp_path):
    """No files under the root, no download: 5,000 signals of 40 points, 10 classes, the
    generator's 4,000 train then 1,000 test. A linear model learns well above chance
    (1/10) and far below perfect (the set exists because it is hard for a linear
    model; its paper reports about 32% for logistic regression)."""
    dataset = DatasetSpec(name="mnist1d", root=str(tmp_path / "nowhere"))
    check_available(dataset)
    pool = load_pool(dataset)
    assert pool.x.shape == (5000, 40) and pool.x.dtype == np.float32
    assert pool.y.shape == (5000,) and pool.y.dtype == np.int64
    assert np.bincount(pool.y).tolist() == [500] * 10
    assert abs(pool.x.mean()) < 0.01 and abs(pool.x.std() - 1) < 0.01
    assert not (tmp_path / "nowhere").exists()  # nothing cached on disk, nothing written
    clf = LogisticRegression(max_iter=2000).fit(pool.x[:4000], pool.y[:4000])
    assert 0.2 < clf.score(pool.x[4000:], pool.y[4000:]) < 0.5


def test_the_authors_tabular_budget():
    train, finetune = epoch_budgets("mnist1d", TrainSpec())
    assert (train.max_epochs, finetune.max_epochs) == (50, 25)
    assert train.patience == finetune.patience == 5


@pytest.mark.slow
def test_a_cell_on_mnist1d_overfits_and_leaks(tmp_path):
    """The user's route: the cell command by name, the authors' budget (50 epochs, fc),
    the original victim with one shadow. Measured: train accuracy 0.92, test 0.48,
    conf AUC 0.81; a pipeline that broke the labels or the split would sit at 0.5."""
    import pandas as pd

    from mia_ray.cell import main

    code = main(["--dataset", "mnist1d", "--knowledge", "original", "--shadows", "1",
                 "--attacks", "conf,gap", "--store", str(tmp_path / "store"),
                 "--results", str(tmp_path / "results")])
    assert code == 0
    rows = pd.read_parquet(tmp_path / "results" / "attacks").set_index("attack")
    assert set(rows.dataset) == {"mnist1d"} and set(rows.arch) == {"fc"}
    victim = rows.loc["conf"]
    assert victim.victim_train_acc > 0.8 and 0.3 < victim.victim_test_acc < 0.7
    assert victim.victim_train_acc - victim.victim_test_acc > 0.2
    assert rows.loc["conf", "auc"] > 0.7 and rows.loc["gap", "accuracy"] > 0.6
