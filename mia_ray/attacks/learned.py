"""Learned attacks: a small network trained to tell shadow members from non-members.

The MLP attacks (``nn``, ``nn_top3``, ``nn_cls``, ``nn_sens_cls``) and SAMIA differ only
in their input vector and their network; all share :func:`train_attack_model` (docs/method.md,
"Attacks"): SGD with momentum 0.9 and weight decay 5e-4, cross-entropy over the classes
non-member = 0 / member = 1, learning rate x0.1 at 50% and 75% of the epochs.

Every fresh network starts as the authors' attack networks do: Xavier-normal weights
and zero biases on its ``nn.Linear`` layers (:func:`init_attack_weights`).

Randomness: one seed per fit draws the network's initialisation and its dropout
masks (the torch RNG, seeded inside :func:`torch.random.fork_rng`, so fitting neither
reads nor changes the caller's global RNG state) and its shuffle (its own generator).
A sweep's fits take it from their key (:func:`mia_ray.pipeline.attack_seed`), so two
dataset seeds never share an attack's randomness; a direct :meth:`LearnedAttack.fit`
without one uses ``spec.seed``.

Speed (bench/bench_attacks.py, BENCHMARKS.md): dropout is :class:`Dropout`, whose
masks come from uniform draws rather than ``nn.Dropout``'s Bernoulli kernel, and SGD
runs its foreach implementation. Both change no arithmetic of the training itself;
the first changes which masks a seed gives (the same distribution, other bits), so
fits made before this change are equivalent but not bit-identical. SAMIA's attention
dropout is such a module too (:class:`~mia_ray.attacks.networks.SelfAttention`), for
the same reason and so that stacked fits can supply its masks.

Many fits at once: :mod:`mia_ray.attacks.stacked_fit` trains the networks of several
fits (and one fit's MLPs, padded to one width) as stacked jobs that end where these
lone fits would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mia_ray.attacks import Attack, register_attack
from mia_ray.attacks.compiled import CompiledLoss, worth_compiling
from mia_ray.attacks.networks import (  # noqa: F401 (re-exports)
    Dropout,
    SAMIANet,
    init_attack_weights,
    mlp,
)
from mia_ray.features import Features
from mia_ray.specs import AttackSpec
from mia_ray.stacking.attacks import MIN_BATCH

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# Scoring needs no gradients, so big batches only cost memory.
SCORE_BATCH = 4096


@contextlib.contextmanager
def _seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def seeded_network(attack: LearnedAttack, seed: int, device: torch.device
                   ) -> tuple[nn.Module, torch.Generator]:
    """``attack``'s freshly built network and the generator its dropout then draws from.

    The network is built under the torch RNG seeded with ``seed`` (the one place a
    learned attack's network is made, alone or stacked); the generator continues that
    stream where a lone fit's training continues it. On CUDA a lone fit's dropout
    draws from the CUDA generator seeded with ``seed``, which the generator restarts.
    """
    with _seeded_rng(seed, device):
        module = attack.build()
        if device.type == "cuda":
            generator = torch.Generator(device=device).manual_seed(seed)
        else:
            generator = torch.Generator()
            generator.set_state(torch.random.get_rng_state())
    return module, generator


def _scheduled(optimizer: torch.optim.Optimizer, epochs: int
               ) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[epochs // 2, (3 * epochs) // 4], gamma=0.1)


def epoch_lrs(spec: AttackSpec) -> list[float]:
    """The learning rate of each epoch of :func:`train_attack_model`, from the same scheduler."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=spec.lr)
    scheduler = _scheduled(optimizer, spec.epochs)
    lrs = []
    for _ in range(spec.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # keeps the scheduler from warning about the call order
        scheduler.step()
    return lrs


def train_attack_model(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                       spec: AttackSpec, *, device: torch.device, seed: int) -> None:
    """Train ``module`` in place as a 2-class classifier; the one loop of every learned attack.

    Args:
        module: maps (B, d) inputs to (B, 2) logits; moved to ``device``.
        inputs: (n, d) float32 attack inputs.
        targets: (n,) int64, 1 for members, 0 for non-members.
        spec: epochs, lr and batch_size.
        device: where training runs; the whole training set is moved there once, so
            an epoch costs no host-device copies.
        seed: the fit's seed, which seeds the shuffle.
    """
    module.to(device).train()
    inputs, targets = inputs.to(device), targets.to(device)
    # foreach: the same per-tensor arithmetic as the default loop on a CPU, without a
    # Python round trip per parameter tensor (SAMIA has 42 of them).
    optimizer = torch.optim.SGD(module.parameters(), lr=spec.lr, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY, foreach=True)
    scheduler = _scheduled(optimizer, spec.epochs)
    shuffle = torch.Generator().manual_seed(seed)
    n = len(inputs)
    steps = spec.epochs * (n // spec.batch_size + (n % spec.batch_size >= MIN_BATCH))
    if worth_compiling(module, steps):
        batch_loss = CompiledLoss(module, inputs, spec.batch_size)
    else:
        def batch_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(module(x), y)
    for _ in range(spec.epochs):
        order = torch.randperm(n, generator=shuffle).to(device)
        for start in range(0, n, spec.batch_size):
            batch = order[start:start + spec.batch_size]
            if len(batch) < MIN_BATCH:
                continue
            loss = batch_loss(inputs[batch], targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    module.eval()


class LearnedAttack(Attack):
    """A network trained on shadow features; subclasses choose the input and the network."""

    def __init__(self, *, num_classes: int) -> None:
        super().__init__(num_classes=num_classes)
        self.module: nn.Module | None = None

    def inputs(self, features: Features) -> np.ndarray:
        """(n, d) float32 input vectors of the network."""
        raise NotImplementedError

    def build(self) -> nn.Module:
        """A freshly initialised network for ``self.num_classes``."""
        raise NotImplementedError

    def fit(self, shadow: Features, spec: AttackSpec, *,
            device: torch.device | str | None = None, seed: int | None = None) -> None:
        """Build the network under ``seed`` (default ``spec.seed``) and train it on ``shadow``."""
        self._check_features(shadow, "shadow")
        seed = spec.seed if seed is None else seed
        device = torch.device(device) if device is not None else torch.device("cpu")
        inputs = torch.from_numpy(np.ascontiguousarray(self.inputs(shadow), dtype=np.float32))
        targets = torch.from_numpy(shadow.member.astype(np.int64))
        with _seeded_rng(seed, device):
            module = self.build()
            train_attack_model(module, inputs, targets, spec, device=device, seed=seed)
        self.module = module

    def logits(self, target: Features) -> torch.Tensor:
        """(n, 2) logits on the CPU, in eval mode."""
        if self.module is None:
            raise RuntimeError(f"{self.name}: call fit or load_state_dict first")
        self._check_features(target, "target")
        device = next(self.module.parameters()).device
        inputs = torch.from_numpy(np.ascontiguousarray(self.inputs(target), dtype=np.float32))
        self.module.eval()
        with torch.inference_mode():
            out = [self.module(chunk.to(device)).cpu() for chunk in inputs.split(SCORE_BATCH)]
        return torch.cat(out) if out else torch.empty(0, 2)

    def score(self, target: Features) -> np.ndarray:
        return torch.softmax(self.logits(target).double(), dim=1)[:, 1].numpy()

    def decide(self, target: Features) -> np.ndarray:
        return (self.logits(target).argmax(dim=1) == 1).numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        if self.module is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit")
        state = {f"module.{k}": v.detach().cpu().numpy().copy()
                 for k, v in self.module.state_dict().items()}
        state["num_classes"] = np.asarray(self.num_classes, dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray], *,
                        spec: AttackSpec | None = None) -> None:
        saved_classes = int(state["num_classes"])
        if saved_classes != self.num_classes:
            raise ValueError(f"{self.name}: state is for {saved_classes} classes, "
                             f"the attack was built for {self.num_classes}")
        module = self.build()
        prefix = "module."
        weights = {k[len(prefix):]: torch.from_numpy(np.array(v))
                   for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(weights, strict=True)
        self.module = module.eval()


class MLPAttack(LearnedAttack):
    """A learned attack whose network is :func:`mlp` over the input vector."""

    def input_dim(self) -> int:
        raise NotImplementedError

    def build(self) -> nn.Module:
        return mlp(self.input_dim())


@register_attack("nn")
class ProbMLPAttack(MLPAttack):
    """MLP on the full probability vector."""

    def input_dim(self) -> int:
        return self.num_classes

    def inputs(self, features: Features) -> np.ndarray:
        return features.prob


@register_attack("nn_top3")
class Top3MLPAttack(MLPAttack):
    """MLP on the three largest probabilities, sorted descending (label-free)."""

    def input_dim(self) -> int:
        return min(3, self.num_classes)

    def inputs(self, features: Features) -> np.ndarray:
        return -np.sort(-features.prob, axis=1)[:, :self.input_dim()]


@register_attack("nn_cls")
class ProbLabelMLPAttack(MLPAttack):
    """MLP on [probability vector, one-hot label]."""

    def input_dim(self) -> int:
        return 2 * self.num_classes

    def inputs(self, features: Features) -> np.ndarray:
        return np.concatenate([features.prob, features.one_hot()], axis=1)


@register_attack("nn_sens_cls")
class ProbSensLabelMLPAttack(MLPAttack):
    """MLP on [probability vector, sensitivity, one-hot label]: SAMIA's inputs, the MLP's net.

    It separates what SAMIA gains from the sensitivity feature from what it gains from
    its attention network.
    """

    def input_dim(self) -> int:
        return 3 * self.num_classes

    def inputs(self, features: Features) -> np.ndarray:
        return np.concatenate([features.prob, features.sens, features.one_hot()], axis=1)


@register_attack("samia")
class SAMIAAttack(LearnedAttack):
    """The paper's self-attention attack on [prob, sens, one-hot label]."""

    def build(self) -> nn.Module:
        return SAMIANet(self.num_classes)

    def inputs(self, features: Features) -> np.ndarray:
        return np.concatenate([features.prob, features.sens, features.one_hot()], axis=1)
