"""Attack features: batched sensitivity against a per-draw loop and closed forms, order, seeding."""

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from mia_ray.features import Features, extract_features, sensitivity, sensitivity_loop


def _tiny_cnn(num_classes: int = 3) -> nn.Module:
    # BatchNorm and dropout make train mode differ from eval mode, which the
    # sensitivity functions must not depend on.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 4 * 4, num_classes),
    )


class LinearProb(nn.Module):
    """Two classes whose probabilities are affine in x: p_0 = a + b.x, p_1 = 1 - p_0.

    softmax(log p) = p, so the finite difference along u is exactly b.u and the
    sensitivity of both classes is mean |b.u|, whatever eps is.
    """

    def __init__(self, a: float, b: torch.Tensor) -> None:
        super().__init__()
        self.a = a
        self.b = nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p0 = self.a + x @ self.b
        return torch.log(torch.stack([p0, 1 - p0], dim=1))


def test_batched_sensitivity_matches_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.randn(9, 6, dtype=torch.float64)
    fast = sensitivity(model, x, draws=7, eps=1e-3,
                       generator=torch.Generator().manual_seed(3))
    slow = sensitivity_loop(model, x, draws=7, eps=1e-3,
                            generator=torch.Generator().manual_seed(3))
    assert fast.shape == (9, 4)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert fast.abs().sum() > 0


def test_batched_sensitivity_matches_loop_on_cnn_in_train_mode():
    torch.manual_seed(1)
    model = _tiny_cnn().double().train()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    fast = sensitivity(model, x, draws=4, eps=1e-3, generator=torch.Generator().manual_seed(0))
    slow = sensitivity_loop(model, x, draws=4, eps=1e-3,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert model.training, "the caller's train mode must be restored"


def test_sensitivity_of_affine_probabilities_is_directional_derivative():
    b = torch.tensor([0.02, -0.05, 0.01], dtype=torch.float64)
    model = LinearProb(0.4, b)
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], dtype=torch.float64)
    draws = 5
    sens = sensitivity(model, x, draws=draws, eps=1e-3,
                       generator=torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    u = torch.stack([torch.randn(x.shape, generator=replay, dtype=torch.float64)
                     for _ in range(draws)])
    expected = (u @ b).abs().mean(dim=0)  # (B,)
    torch.testing.assert_close(sens[:, 0], expected, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(sens[:, 1], expected, atol=1e-9, rtol=1e-7)


def test_sensitivity_converges_to_half_normal_mean():
    # b.u ~ N(0, |b|^2), so E|b.u| = |b| sqrt(2/pi).
    b = torch.tensor([0.03, 0.04], dtype=torch.float64)
    model = LinearProb(0.5, b)
    sens = sensitivity(model, torch.zeros(1, 2, dtype=torch.float64), draws=20000, eps=1e-3,
                       generator=torch.Generator().manual_seed(0))
    assert sens[0, 0].item() == pytest.approx(0.05 * math.sqrt(2 / math.pi), rel=0.02)


def _digits_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_extract_features_order_flags_and_dtypes():
    torch.manual_seed(0)
    model = _tiny_cnn().train()
    members, nonmembers = _digits_like(7, 0), _digits_like(5, 1)
    f = extract_features(model, members, nonmembers, draws=3, eps=1e-3, seed=0, batch_size=4)
    assert model.training
    assert len(f) == 12
    assert f.prob.shape == f.sens.shape == (12, 3)
    assert f.prob.dtype == f.sens.dtype == np.float32
    assert f.label.dtype == np.int64 and f.member.dtype == bool
    np.testing.assert_array_equal(f.member, [True] * 7 + [False] * 5)
    np.testing.assert_array_equal(f.label, np.concatenate([members[1], nonmembers[1]]))
    np.testing.assert_allclose(f.prob.sum(axis=1), 1.0, rtol=1e-5)
    assert (f.sens >= 0).all() and f.sens.sum() > 0
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(members[0])), dim=1).numpy()
    np.testing.assert_allclose(f.prob[:7], expected, rtol=1e-5, atol=1e-6)


def test_extract_features_is_seeded():
    torch.manual_seed(0)
    model = _tiny_cnn()
    data = _digits_like(6, 0), _digits_like(6, 1)
    a = extract_features(model, *data, draws=2, eps=1e-3, seed=5)
    b = extract_features(model, *data, draws=2, eps=1e-3, seed=5)
    c = extract_features(model, *data, draws=2, eps=1e-3, seed=6)
    np.testing.assert_array_equal(a.sens, b.sens)
    np.testing.assert_array_equal(a.prob, c.prob)
    assert not np.array_equal(a.sens, c.sens)


def test_extract_features_rejects_empty_side():
    model = _tiny_cnn()
    empty = (np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="members"):
        extract_features(model, _digits_like(3, 0), empty, draws=1, eps=1e-3, seed=0)


def _hand_features() -> Features:
    return Features(prob=[[0.7, 0.3], [0.1, 0.9], [0.5, 0.5]], sens=[[1, 2], [3, 4], [5, 6]],
                    label=[0, 1, 1], member=[True, False, True])


def test_features_concat_subset_and_savez_round_trip():
    f = _hand_features()
    both = Features.concat([f, f.subset(np.array([2]))])
    assert len(both) == 4
    np.testing.assert_array_equal(both.member, [True, False, True, True])
    np.testing.assert_allclose(both.true_prob, [0.7, 0.9, 0.5, 0.5])
    np.testing.assert_allclose(both.true_sens, [1, 4, 6, 6])
    buffer = io.BytesIO()
    np.savez(buffer, **both.to_arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as arrays:
        loaded = Features.from_arrays(arrays)
    for name, value in both.to_arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), value)
        assert getattr(loaded, name).dtype == value.dtype


def test_features_validate_shapes_and_labels():
    with pytest.raises(ValueError, match="sens"):
        Features(prob=np.ones((2, 3)), sens=np.ones((2, 2)), label=[0, 1], member=[1, 0])
    with pytest.raises(ValueError, match="labels"):
        Features(prob=np.ones((2, 3)), sens=np.ones((2, 3)), label=[0, 3], member=[1, 0])
    with pytest.raises(ValueError, match="different class counts"):
        Features.concat([_hand_features(), Features(np.ones((1, 3)), np.ones((1, 3)), [0], [1])])
