"""Learned attacks: a small network trained to tell shadow members from non-members.

The MLP attacks (``nn``, ``nn_top3``, ``nn_cls``, ``nn_sens_cls``) and SAMIA differ only
in their input vector and their network; all share :func:`train_attack_model` (docs/method.md,
"Attacks"): SGD with momentum 0.9 and weight decay 5e-4, cross-entropy over the classes
non-member = 0 / member = 1, learning rate x0.1 at 50% and 75% of the epochs.

Every fresh network starts as the authors' attack networks do: Xavier-normal weights
and zero biases on its ``nn.Linear`` layers (:func:`init_attack_weights`).

Randomness: the network's initialisation and its dropout masks come from the torch
RNG seeded with ``spec.seed`` inside :func:`torch.random.fork_rng`, so fitting neither
reads nor changes the caller's global RNG state; the shuffle has its own generator.

Speed (bench/bench_attacks.py, BENCHMARKS.md): dropout is :class:`Dropout`, whose
masks come from uniform draws rather than ``nn.Dropout``'s Bernoulli kernel, and SGD
runs its foreach implementation. Both change no arithmetic of the training itself;
the first changes which masks a seed gives (the same distribution, other bits), so
fits made before this change are equivalent but not bit-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mia_ray.attacks import Attack, register_attack
from mia_ray.features import Features
from mia_ray.specs import AttackSpec

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# Scoring needs no gradients, so big batches only cost memory.
SCORE_BATCH = 4096


class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, with masks drawn as ``uniform >= p``.

    ``nn.Dropout`` on a CPU draws its masks with ``bernoulli_``, which on non-Intel
    CPUs (no MKL stream) costs one double-precision uniform per element, serially:
    a fifth of every MLP attack's training time and a quarter of SAMIA's in the
    profile. ``torch.rand`` needs one float per element and the mask is the same in
    distribution (keep with probability 1 - p, scaled by 1 / (1 - p)).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # The mask is built in place in the uniform draws' buffer; autograd keeps it
        # (not x) for the backward pass, as it would nn.Dropout's.
        keep = torch.rand(x.shape, device=x.device, dtype=x.dtype).ge_(self.p)
        return x * keep.mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


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


def train_attack_model(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                       spec: AttackSpec, *, device: torch.device) -> None:
    """Train ``module`` in place as a 2-class classifier; the one loop of every learned attack.

    Args:
        module: maps (B, d) inputs to (B, 2) logits; moved to ``device``.
        inputs: (n, d) float32 attack inputs.
        targets: (n,) int64, 1 for members, 0 for non-members.
        spec: epochs, lr, batch_size and the shuffle seed.
        device: where training runs; the whole training set is moved there once, so
            an epoch costs no host-device copies.
    """
    module.to(device).train()
    inputs, targets = inputs.to(device), targets.to(device)
    # foreach: the same per-tensor arithmetic as the default loop on a CPU, without a
    # Python round trip per parameter tensor (SAMIA has 42 of them).
    optimizer = torch.optim.SGD(module.parameters(), lr=spec.lr, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY, foreach=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[spec.epochs // 2, (3 * spec.epochs) // 4], gamma=0.1)
    shuffle = torch.Generator().manual_seed(spec.seed)
    n = len(inputs)
    for _ in range(spec.epochs):
        order = torch.randperm(n, generator=shuffle).to(device)
        for start in range(0, n, spec.batch_size):
            batch = order[start:start + spec.batch_size]
            if len(batch) < 2:
                # A lone trailing sample would crash BatchNorm's training statistics.
                continue
            loss = F.cross_entropy(module(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    module.eval()


def init_attack_weights(module: nn.Module) -> nn.Module:
    """Xavier-normal weights and zero biases on every ``nn.Linear`` layer; returns ``module``.

    As the authors' ``weight_init``, which matches the class name ``Linear`` exactly:
    attention's own projections (``in_proj``, and ``out_proj``, a Linear subclass) keep
    PyTorch's initialisation. Draws from the global torch RNG, which
    :meth:`LearnedAttack.fit` seeds with ``spec.seed``.
    """
    with torch.no_grad():
        for layer in module.modules():
            if type(layer) is nn.Linear:
                nn.init.xavier_normal_(layer.weight)
                if layer.bias is not None:
                    layer.bias.zero_()
    return module


def mlp(in_features: int) -> nn.Sequential:
    """The MLP attack network: d -> 512 -> 256 -> 128 -> 2, dropout 0.2 after the first two."""
    return init_attack_weights(nn.Sequential(
        nn.Linear(in_features, 512), nn.ReLU(), Dropout(0.2),
        nn.Linear(512, 256), nn.ReLU(), Dropout(0.2),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, 2),
    ))


class SAMIANet(nn.Module):
    """Self-attention attack network: one token per class, no positional encoding.

    Input is the concatenation [prob | sens | one-hot label] of length 3C. After
    BatchNorm over those 3C features, token c gathers (p_c, sens_c, y_c), so every
    class is described by the same three quantities and attention compares classes.
    """

    def __init__(self, num_classes: int, *, d_model: int = 64, heads: int = 4,
                 layers: int = 3, feedforward: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm1d(3 * num_classes)
        self.embed = nn.Sequential(nn.Linear(3, d_model), nn.GELU())
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=feedforward,
                                           dropout=dropout, activation="gelu",
                                           batch_first=True)
        # Nested tensors only pay off with padding masks, which fixed C tokens never need.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        # The layers' own dropouts, not the one inside attention (scaled_dot_product_
        # attention draws it; it is the smallest of the four).
        for block in self.encoder.layers:
            for name in ("dropout", "dropout1", "dropout2"):
                setattr(block, name, Dropout(dropout))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(num_classes * d_model, 64),
                                  nn.ReLU(), nn.Linear(64, 2))
        init_attack_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3C) laid out as three blocks of C -> (B, 3, C) -> (B, C, 3): token per class.
        tokens = self.norm(x).view(len(x), 3, self.num_classes).transpose(1, 2)
        return self.head(self.encoder(self.embed(tokens)))


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
            device: torch.device | str | None = None) -> None:
        self._check_features(shadow, "shadow")
        device = torch.device(device) if device is not None else torch.device("cpu")
        inputs = torch.from_numpy(np.ascontiguousarray(self.inputs(shadow), dtype=np.float32))
        targets = torch.from_numpy(shadow.member.astype(np.int64))
        with _seeded_rng(spec.seed, device):
            module = self.build()
            train_attack_model(module, inputs, targets, spec, device=device)
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
