"""Attack features: what a model reveals about each audited sample.

For every sample the attacks see the softmax output ``prob``, the ``sens``itivity of
that output to tiny Gaussian input noise, the true ``label`` and, as ground truth,
whether the sample was a ``member`` of the model's training set (docs/method.md, "Attack
features"). When the label-only attack is asked for, they also see ``robust``: the
fraction of M Gaussian-perturbed copies of the sample whose predicted label is still
the true one (:func:`label_robustness`; docs/method.md, "Label-only").

Sensitivity is estimated by finite differences over ``m = draws`` random directions u:

    sens = mean_u |softmax(f(x + eps * u)) - softmax(f(x))| / eps      (elementwise, C values)

:func:`sensitivity` pushes all m perturbed copies of a batch through one forward pass;
:func:`sensitivity_loop` does one pass per draw and exists as the reference the fast
version is tested and benchmarked against. Both draw the noise from the given
generator in the same order (draw by draw, each of the batch's shape), so on the same
generator state they see the same u and agree up to float rounding.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_FIELDS = ("prob", "sens", "label", "member")
_OPTIONAL = ("robust",)

LABEL_NOISE_STD = 0.2
"""Standard deviation of the label-only attack's Gaussian perturbations, in units of the
normalised inputs (each feature or pixel channel has unit variance over the pool);
docs/method.md, "Label-only", says how it was chosen."""


@dataclass
class Features:
    """Per-sample attack inputs of one model on one audited set.

    Arrays are converted on construction to the dtypes below, so hand-made instances
    in tests and loaded files behave the same.
    """

    prob: np.ndarray
    """(n, C) float32 softmax outputs."""
    sens: np.ndarray
    """(n, C) float32 sensitivity of each softmax output to input noise."""
    label: np.ndarray
    """(n,) int64 true class."""
    member: np.ndarray
    """(n,) bool, True for members (training samples of the model)."""
    robust: np.ndarray | None = None
    """(n,) float32 in [0, 1]: the fraction of M perturbed copies predicted as the true
    class (:func:`label_robustness`); None when the label-only attack was not asked for."""

    def __post_init__(self) -> None:
        self.prob = np.asarray(self.prob, dtype=np.float32)
        self.sens = np.asarray(self.sens, dtype=np.float32)
        self.label = np.asarray(self.label, dtype=np.int64)
        self.member = np.asarray(self.member, dtype=bool)
        if self.robust is not None:
            self.robust = np.asarray(self.robust, dtype=np.float32)
        if self.prob.ndim != 2:
            raise ValueError(f"prob must be (n, C), got shape {self.prob.shape}")
        n, c = self.prob.shape
        if self.sens.shape != (n, c):
            raise ValueError(f"sens has shape {self.sens.shape}, expected {(n, c)}")
        for name in ("label", "member", *_OPTIONAL):
            if getattr(self, name) is not None and getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {(n,)}")
        if n and (self.label.min() < 0 or self.label.max() >= c):
            raise ValueError(f"labels must lie in [0, {c}), got [{self.label.min()}, "
                             f"{self.label.max()}]")

    def __len__(self) -> int:
        return len(self.label)

    @property
    def num_classes(self) -> int:
        return self.prob.shape[1]

    @property
    def true_prob(self) -> np.ndarray:
        """(n,) p_y, the probability given to the true class."""
        return np.take_along_axis(self.prob, self.label[:, None], axis=1)[:, 0]

    @property
    def true_sens(self) -> np.ndarray:
        """(n,) sens_y, the sensitivity at the true class."""
        return np.take_along_axis(self.sens, self.label[:, None], axis=1)[:, 0]

    def one_hot(self) -> np.ndarray:
        """(n, C) float32 one-hot encoding of the labels."""
        return np.eye(self.num_classes, dtype=np.float32)[self.label]

    def subset(self, index: np.ndarray) -> Features:
        """The samples selected by a boolean mask or an index array."""
        return Features(**{f: None if getattr(self, f) is None else getattr(self, f)[index]
                           for f in _FIELDS + _OPTIONAL})

    @staticmethod
    def concat(parts: Sequence[Features]) -> Features:
        """Stack the samples of several Features (e.g. the K shadow models) in order."""
        if not parts:
            raise ValueError("concat needs at least one Features")
        classes = {p.num_classes for p in parts}
        if len(classes) != 1:
            raise ValueError(f"cannot concat Features with different class counts {classes}")
        # An optional column survives only if every part has it.
        return Features(**{f: (None if any(getattr(p, f) is None for p in parts)
                               else np.concatenate([getattr(p, f) for p in parts]))
                           for f in _FIELDS + _OPTIONAL})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez``; read back with :meth:`from_arrays`."""
        return {f: getattr(self, f) for f in _FIELDS + _OPTIONAL if getattr(self, f) is not None}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Features:
        """Inverse of :meth:`to_arrays`; accepts the mapping ``np.load`` returns."""
        return cls(**{f: np.asarray(arrays[f]) for f in _FIELDS},
                   **{f: np.asarray(arrays[f]) for f in _OPTIONAL if f in arrays})


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Train-mode BatchNorm would mix statistics across the stacked perturbed copies
    # and dropout would add noise of its own, so sensitivity is always taken in eval.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _draw_noise(x: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
    # One call per draw, each of the batch's shape, in both implementations: a single
    # randn of shape (m, *x.shape) would not yield the same numbers on every backend.
    return torch.stack([
        torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        for _ in range(draws)
    ])


def sensitivity(model: nn.Module, x: torch.Tensor, *, draws: int, eps: float,
                generator: torch.Generator,
                base_prob: torch.Tensor | None = None) -> torch.Tensor:
    """Batched finite-difference sensitivity of the softmax output to input noise.

    Args:
        model: classifier returning logits; evaluated in eval mode (its mode is restored).
        x: (B, ...) inputs on the model's device, already normalised.
        draws: m, the number of Gaussian directions averaged.
        eps: step size of the perturbation.
        generator: source of the noise, on ``x``'s device; it is advanced by m draws.
        base_prob: softmax(f(x)) if the caller already has it, to save a forward pass.

    Returns:
        (B, C) tensor: mean over draws of |softmax(f(x + eps u)) - softmax(f(x))| / eps.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    with _eval_mode(model), torch.inference_mode():
        if base_prob is None:
            base_prob = torch.softmax(model(x), dim=1)
        noise = _draw_noise(x, draws, generator)
        perturbed = (x.unsqueeze(0) + eps * noise).reshape(draws * x.shape[0], *x.shape[1:])
        prob = torch.softmax(model(perturbed), dim=1).reshape(draws, *base_prob.shape)
        return (prob - base_prob).abs().mean(dim=0) / eps


def sensitivity_loop(model: nn.Module, x: torch.Tensor, *, draws: int, eps: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Reference for :func:`sensitivity`: one forward pass per draw (slow, obviously right)."""
    with _eval_mode(model), torch.inference_mode():
        base_prob = torch.softmax(model(x), dim=1)
        noise = _draw_noise(x, draws, generator)
        total = torch.zeros_like(base_prob)
        for u in noise:
            total += (torch.softmax(model(x + eps * u), dim=1) - base_prob).abs()
        return total / draws / eps


def label_robustness(model: nn.Module, x: torch.Tensor, label: torch.Tensor, *, queries: int,
                     std: float, generator: torch.Generator,
                     max_inputs: int = 16384) -> torch.Tensor:
    """Fraction of ``queries`` Gaussian-perturbed copies of each input labelled ``label``.

    The label-only attack's query (Choquette-Choo et al. 2021, "noise robustness"): the
    adversary sees only the predicted class of x + std * u, u ~ N(0, I), for M = ``queries``
    draws. Draws are taken as :func:`sensitivity` takes them (one per copy, each of the
    batch's shape), and pushed through the model ``max_inputs`` inputs at a time.

    Returns:
        (B,) float32 tensor in [0, 1].
    """
    if queries < 1:
        raise ValueError(f"queries must be >= 1, got {queries}")
    step = max(1, max_inputs // max(1, x.shape[0]))
    correct = torch.zeros(x.shape[0], device=x.device)
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, queries, step):
            draws = min(step, queries - start)
            noise = _draw_noise(x, draws, generator)
            perturbed = (x.unsqueeze(0) + std * noise).reshape(draws * x.shape[0], *x.shape[1:])
            predicted = model(perturbed).argmax(dim=1).reshape(draws, x.shape[0])
            correct += (predicted == label.unsqueeze(0)).sum(dim=0)
    return (correct / queries).float()


def _model_device(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    first = next(model.parameters(), None)
    return first.dtype if first is not None else torch.float32


def _features_of(model: nn.Module, x: np.ndarray, y: np.ndarray, *, member: bool,
                 draws: int, eps: float, generator: torch.Generator,
                 device: torch.device, batch_size: int, label_queries: int,
                 label_generator: torch.Generator | None) -> Features:
    dtype = _model_dtype(model)
    y = np.asarray(y, dtype=np.int64)
    probs, senses, robust = [], [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            # Copies: x and y may be read-only memory maps, which torch would share, and warn.
            xb = torch.tensor(x[start:start + batch_size], device=device, dtype=dtype)
            prob = torch.softmax(model(xb), dim=1)
            sens = sensitivity(model, xb, draws=draws, eps=eps, generator=generator,
                               base_prob=prob)
            probs.append(prob.float().cpu())
            senses.append(sens.float().cpu())
            if label_queries:
                yb = torch.tensor(y[start:start + batch_size], device=device)
                robust.append(label_robustness(model, xb, yb, queries=label_queries,
                                               std=LABEL_NOISE_STD,
                                               generator=label_generator).cpu())
    return Features(prob=torch.cat(probs).numpy(), sens=torch.cat(senses).numpy(), label=y,
                    member=np.full(len(y), member),
                    robust=torch.cat(robust).numpy() if label_queries else None)


def extract_features(model: nn.Module, members: tuple[np.ndarray, np.ndarray],
                     nonmembers: tuple[np.ndarray, np.ndarray], *, draws: int, eps: float,
                     seed: int, device: torch.device | str | None = None,
                     batch_size: int = 512, label_queries: int = 0,
                     label_seed: int = 0) -> Features:
    """Features of ``model`` on its members followed by its non-members.

    The model runs on ``device`` (default: where its parameters are) and is left as
    it was found: same train/eval mode, same device. Each forward of the sensitivity
    pass holds ``draws * batch_size`` inputs, so lower ``batch_size`` for big models.

    The noise comes from one generator on ``device`` seeded with ``seed``, consumed
    batch by batch, so the exact values (not their distribution) depend on the
    device type and on ``batch_size``.

    Args:
        model: classifier returning logits.
        members: (inputs, labels) of the training samples.
        nonmembers: (inputs, labels) of samples the model never saw.
        draws: m, Gaussian directions per sample (AttackSpec.sens_draws).
        eps: perturbation size (AttackSpec.sens_eps).
        seed: seeds the sensitivity's noise generator.
        label_queries: M, perturbed copies per sample for the ``robust`` column
            (:func:`label_robustness`); 0 leaves the column out.
        label_seed: seeds the label-only perturbations' own generator, so the
            sensitivity draws are the same with and without them.
        device: where the model and the batches run.
        batch_size: samples per forward pass of the unperturbed inputs.

    Returns:
        Features with the members first, ``member`` set accordingly.
    """
    for name, (x, y) in (("members", members), ("nonmembers", nonmembers)):
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"{name} must be non-empty (inputs, labels) of equal length, "
                             f"got {len(x)} inputs and {len(y)} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if label_queries < 0:
        raise ValueError(f"label_queries must be >= 0, got {label_queries}")
    home = _model_device(model)
    device = torch.device(device) if device is not None else home
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    label_generator = None
    if label_queries:
        label_generator = torch.Generator(device=device)
        label_generator.manual_seed(label_seed)
    model.to(device)
    try:
        with _eval_mode(model):
            parts = [
                _features_of(model, x, y, member=flag, draws=draws, eps=eps,
                             generator=generator, device=device, batch_size=batch_size,
                             label_queries=label_queries, label_generator=label_generator)
                for (x, y), flag in ((members, True), (nonmembers, False))
            ]
    finally:
        model.to(home)
    return Features.concat(parts)
