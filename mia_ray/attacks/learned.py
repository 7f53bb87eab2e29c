"""Learned attacks: a small network trained to tell shadow members from non-members.

The MLP attacks (``nn``, ``nn_top3``, ``nn_cls``, ``nn_sens_cls``) and SAMIA differ in
their input vector and network; all train through the one loop
(:func:`mia_ray.training.train`) to :func:`attack_recipe` (docs/method.md, "Attacks").
Fresh networks start as the authors' do (:func:`init_attack_weights`).

Randomness: one seed per fit (:func:`mia_ray.pipeline.attack_seed`; ``spec.seed`` for a
direct :meth:`LearnedAttack.fit`) draws the network's initialisation, then its dropout
masks (the stream continues: :func:`mia_ray.eager.seeded`) and its shuffle.

Many fits at once (:func:`fit_learned`) stack networks of one shape and schedule:

* MLPs of one class count, whatever their input: first layers zero-padded to the widest
  input. A zero column meets a zero weight column, whose gradient, weight decay and
  momentum stay zero, so each computes what it computes alone; the padding is cut off.
* SAMIA networks, through vmap, on CUDA only: on a CPU that measured no faster
  (BENCHMARKS.md, section 7); there its long fits compile their loss instead.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mia_ray.attacks import Attack, FitJob, Knowledge, register_attack
from mia_ray.attacks.networks import (  # noqa: F401 (re-exports)
    Dropout,
    SAMIANet,
    init_attack_weights,
    mlp,
)
from mia_ray.eager import seeded
from mia_ray.features import Features
from mia_ray.recipe import Recipe, Row
from mia_ray.specs import AttackSpec
from mia_ray.training import train

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# Scoring needs no gradients, so big batches only cost memory.
SCORE_BATCH = 4096


def attack_recipe(spec: AttackSpec) -> Recipe:
    """The paper's attack training: SGD, momentum, weight decay, LR x0.1 at 50% and 75%
    of a fixed number of epochs; batches of one sample are skipped (BatchNorm)."""
    return Recipe("sgd", spec.lr, spec.batch_size, spec.epochs, weight_decay=WEIGHT_DECAY,
                  momentum=MOMENTUM, milestones=(spec.epochs // 2, (3 * spec.epochs) // 4),
                  min_batch=2, compiles=True)


def _group_key(job: FitJob) -> tuple:
    net = "mlp" if isinstance(job.attack, MLPAttack) else job.attack.name
    spec = job.spec
    return (net, job.attack.num_classes, spec.epochs, spec.lr, spec.batch_size)


def _padded(module: nn.Sequential, width: int) -> nn.Sequential:
    """A copy whose first Linear takes ``width`` inputs, the extra columns zero (no RNG use)."""
    out = copy.deepcopy(module)
    first = out[0]
    extra = width - first.in_features
    if extra:
        w = first.weight.detach()
        first.weight = nn.Parameter(torch.cat([w, w.new_zeros(len(w), extra)], dim=1))
        first.in_features = width
    return out


def fit_learned(jobs: Sequence[FitJob], *, device: torch.device | str | None = None,
                stack: bool = True, stack_vmap: bool | None = None) -> None:
    """Fit every job's attack in place; networks of one shape and schedule train together.

    ``stack=False`` fits each attack alone, one after another. ``stack_vmap`` stacks
    the networks that need the vmap path (SAMIA) too; by default only on CUDA.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if stack_vmap is None:
        stack_vmap = device.type == "cuda"
    groups: dict[tuple, list[FitJob]] = {}
    for job in jobs:
        job.attack._check_features(job.knowledge.shadow, "shadow")
        together = stack and (stack_vmap or isinstance(job.attack, MLPAttack))
        groups.setdefault(_group_key(job) if together else (id(job),), []).append(job)
    for group in groups.values():
        _fit_group(group, device)


def _fit_group(group: list[FitJob], device: torch.device) -> None:
    built = []
    for job in group:
        with seeded(job.seed, device) as continuing:
            built.append((job.attack.build(), continuing()))
    shadows = [job.knowledge.shadow for job in group]
    inputs = [np.ascontiguousarray(job.attack.inputs(shadow), dtype=np.float32)
              for job, shadow in zip(group, shadows)]
    padded = len(group) > 1 and isinstance(group[0].attack, MLPAttack)
    if padded:
        width = max(x.shape[1] for x in inputs)
        inputs = [np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in inputs]
        nets = [_padded(module, width) for module, _ in built]
    else:
        nets = [module for module, _ in built]
    rows = [Row(net, (x, shadow.member.astype(np.int64)), seed=job.seed, dropout=gen)
            for net, x, shadow, job, (_, gen) in zip(nets, inputs, shadows, group, built)]
    train(rows, attack_recipe(group[0].spec), device=device)
    for job, net, (module, _) in zip(group, nets, built):
        if padded:  # the trained weights, the first layer's padding cut off
            state = net.state_dict()
            state["0.weight"] = state["0.weight"][:, :module[0].in_features]
            module.to(device).load_state_dict(state)
        job.attack.module = module.eval()


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
        fit_learned([FitJob(self, Knowledge(shadow=shadow), spec,
                            spec.seed if seed is None else seed)], device=device)

    @classmethod
    def fit_many(cls, jobs: Sequence[FitJob], *, device: torch.device | str | None = None,
                 stack: bool = True) -> None:
        fit_learned(jobs, device=device, stack=stack)

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
