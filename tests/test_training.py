import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from mia_ray import eager, predict
from mia_ray.models import build_model
from mia_ray.predict import accuracy, predict_proba
from mia_ray.specs import TrainSpec
from mia_ray.training import TrainingHook, fit

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return x, d.target.astype(np.int64)


@pytest.mark.slow
def test_small_cnn_fits_its_training_set(digits):
    x, y = digits
    model = build_model("small_cnn", "digits", seed=0)
    report = fit(model, (x[:200], y[:200]), (x[200:300], y[200:300]),
                 TrainSpec(max_epochs=25, patience=25, batch_size=32), seed=0, device=CPU)
    assert accuracy(model, x[:200], y[:200]) >= 0.97
    assert accuracy(model, x[300:600], y[300:600]) > 0.7  # it learned digits, not noise
    assert report.device == "cpu" and report.extra == {}
    assert 1 <= report.best_epoch <= report.epochs_run <= 25


def test_early_stopping_keeps_the_best_epoch(digits, monkeypatch):
    """Script the dev accuracies, snapshot the weights at each epoch, compare."""
    x, y = digits
    # 0.6 again is no improvement; the 4th epoch without a gain (epoch 6) ends it, so
    # the 0.9 of epoch 7 is never reached.
    scripted = iter([0.2, 0.6, 0.5, 0.6, 0.4, 0.55, 0.9])
    snapshots = []

    def fake_accuracy(model, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(eager, "accuracy", fake_accuracy)
    model = build_model("fc", "digits", seed=0)
    report = fit(model, (x[:100], y[:100]), (x[100:150], y[100:150]),
                 TrainSpec(max_epochs=50, patience=3), seed=0, device=CPU)
    assert (report.epochs_run, report.best_epoch, report.best_dev_acc) == (6, 2, 0.6)
    assert len(snapshots) == 6
    state = model.state_dict()
    assert all(torch.equal(state[k], snapshots[1][k]) for k in state)
    assert not all(torch.equal(state[k], snapshots[-1][k]) for k in state)


@pytest.mark.parametrize("patience", [1, 5])
def test_should_stop_after_more_than_patience_epochs_without_gain(patience):
    from mia_ray.training import should_stop

    assert [should_stop(n, patience) for n in range(patience + 3)] == \
        [False] * (patience + 1) + [True, True]


def test_early_stopping_on_a_dev_set_it_cannot_learn(digits):
    x, y = digits
    rng = np.random.default_rng(0)
    noise_labels = rng.permutation(y[200:260])
    model = build_model("fc", "digits", seed=0)
    report = fit(model, (x[:200], y[:200]), (x[200:260], noise_labels),
                 TrainSpec(max_epochs=60, patience=2), seed=0, device=CPU)
    assert report.epochs_run < 60
    assert report.epochs_run == report.best_epoch + 2 + 1  # patience + 1 epochs without gain
    assert accuracy(model, x[200:260], noise_labels) == pytest.approx(report.best_dev_acc)


@pytest.mark.parametrize("arch", ["fc", "small_cnn"])  # dropout, and BatchNorm statistics
def test_same_seed_same_weights(digits, arch):
    x, y = digits
    spec = TrainSpec(max_epochs=3, patience=3, batch_size=16)
    states = []
    for seed in (5, 5, 6):
        model = build_model(arch, "digits", seed=0)
        fit(model, (x[:96], y[:96]), (x[96:128], y[96:128]), spec, seed=seed, device=CPU)
        states.append(model.state_dict())
    a, b, c = states
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_fit_leaves_the_global_rng_alone(digits):
    x, y = digits
    before = torch.get_rng_state()
    fit(build_model("fc", "digits", seed=0), (x[:64], y[:64]), (x[64:96], y[64:96]),
        TrainSpec(max_epochs=1), seed=3, device=CPU)
    assert torch.equal(before, torch.get_rng_state())


class CountingHook(TrainingHook):
    """Counts steps, and leaves the model in eval mode before each (as a hook that
    scores the model, AdvReg's, does): fit must compute the loss in training mode."""

    def __init__(self):
        self.steps = 0
        self.prepared = False
        self.model = None
        self.modes_at_loss: list[bool] = []

    def prepare(self, model, optimizer, loader):
        self.prepared = True
        self.model = model
        xb, yb = next(iter(loader))  # batches arrive whole and on the device
        assert xb.shape[1:] == (1, 8, 8) and yb.dtype == torch.int64
        return model, optimizer, loader

    def before_step(self, model, x, y):
        self.steps += 1
        model.eval()

    def loss(self, logits, y, x):
        assert logits.requires_grad
        self.modes_at_loss.append(all(m.training for m in self.model.modules()))
        return F.cross_entropy(logits, y)

    def metadata(self):
        return {"steps": self.steps}


def test_hook_is_called(digits):
    x, y = digits
    hook = CountingHook()
    report = fit(build_model("small_cnn", "digits", seed=0), (x[:50], y[:50]),
                 (x[50:70], y[50:70]), TrainSpec(max_epochs=2, patience=5, batch_size=16),
                 seed=0, device=CPU, hook=hook)
    assert hook.prepared
    assert report.extra == {"steps": 2 * 4}  # ceil(50 / 16) batches a epoch
    # Every loss was computed with dropout and BatchNorm in training mode.
    assert hook.modes_at_loss == [True] * 8


def test_predict_proba(digits):
    x, _ = digits
    model = build_model("small_cnn", "digits", seed=0)
    model.train()
    p = predict_proba(model, x[:10], batch_size=3)
    assert p.dtype == np.float32 and p.shape == (10, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert model.training  # the caller's mode is restored
    # Eval mode: the answer does not depend on how the samples are batched.
    np.testing.assert_allclose(p, predict_proba(model, x[:10], batch_size=10), atol=1e-6)


@pytest.mark.parametrize("has_gpu, expected", [(True, "cuda"), (False, "cpu")])
def test_a_model_trains_on_the_gpu_when_there_is_one(monkeypatch, has_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    assert predict.pick_device().type == expected


@pytest.mark.parametrize("n", [37, 64, 5])
def test_the_target_batch_order_is_torchs_dataloader_order(n):
    """The loop's batch order against torch's own DataLoader over a RandomSampler on the
    same seed, epoch after epoch: target models keep the batches that loader gave them."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    from mia_ray.recipe import epoch_batches, target_recipe

    recipe = target_recipe(TrainSpec(batch_size=8))
    gen = torch.Generator().manual_seed(3)
    loader = DataLoader(list(range(n)), collate_fn=lambda b: b, generator=gen,
                        batch_sampler=BatchSampler(RandomSampler(range(n), generator=gen),
                                                   8, drop_last=False))
    ours = torch.Generator().manual_seed(3)
    for _ in range(4):
        assert [b.tolist() for b in epoch_batches(n, ours, recipe)] == list(loader)
