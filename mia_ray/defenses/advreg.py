"""Adversarial regularisation (Nasr, Shokri & Houmansadr 2018) while fine-tuning.

A min-max game between the classifier f and an inference model h that reads what a
black-box attacker sees, the softmax output and the true label, and outputs the
probability that the sample was a training member. Per mini-batch of
:func:`~mia_ray.training.train` (Nasr et al., Algorithm 1):

1. ``k = defense.advreg_steps`` inference steps. Each draws a member batch from the
   training split and a non-member batch of the same size from the **dev** split (the
   victim's own held-out data; its test split is the attack's non-member set and must
   stay unseen), and ascends h's gain

       G(h) = mean log h(f(x_in), y_in) + mean log(1 - h(f(x_ref), y_ref))

   with f fixed: f runs in eval mode without gradients, as an attacker queries it,
   so neither dropout nor BatchNorm statistics see the dev data.
2. One classifier step on fit's batch with the loss

       CE(f(x), y) + theta * mean log h(f(x), y)

   where the second term is h's membership gain on that member batch; minimising it
   moves members' outputs toward what h takes for non-members. h is held fixed in
   this step. ``theta = defense.strength``.

**(choice)** h is an MLP 2C -> 256 -> 64 -> 1 on ``[prob, one-hot label]`` (Nasr et al.
use two branches that are merged; one MLP on the concatenation can represent the same
functions), trained with Adam at lr 1e-3. Member and non-member batches are drawn
without replacement within a batch (with replacement when the split is smaller than
the batch) from a generator seeded by the model's seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mia_ray.training import TrainingHook

INFERENCE_LR = 1e-3


def inference_model(num_classes: int) -> nn.Sequential:
    """h: ``[prob, one-hot label]`` (2C) -> one membership logit."""
    return nn.Sequential(
        nn.Linear(2 * num_classes, 256), nn.ReLU(),
        nn.Linear(256, 64), nn.ReLU(),
        nn.Linear(64, 1),
    )


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    # The classifier's backward then builds no gradients for h's weights.
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class AdvRegHook(TrainingHook):
    """Nasr et al.'s adversarial regularisation as a :class:`TrainingHook`.

    ``inference_steps`` and ``classifier_steps`` count the optimizer steps actually
    taken (through torch's optimizer step hooks), so a test can check the schedule.

    Args:
        strength: theta >= 0, the weight of h's gain in the classifier loss.
        steps: k >= 1 inference-model steps per classifier step.
        train: ``(x, y)`` of the training split (the members).
        dev: ``(x, y)`` of the dev split, the inference model's non-members.
        num_classes: C.
        seed: seeds h's initialisation and the member/non-member draws.
    """

    def __init__(self, *, strength: float, steps: int, train: tuple[np.ndarray, np.ndarray],
                 dev: tuple[np.ndarray, np.ndarray], num_classes: int, seed: int) -> None:
        if not strength >= 0:
            raise ValueError(f"strength must be >= 0, got {strength!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        for name, part in (("train", train), ("dev", dev)):
            if part is None or len(part[1]) == 0 or len(part[0]) != len(part[1]):
                raise ValueError(f"AdvReg needs a non-empty {name} split as (x, y)")
        self.strength = float(strength)
        self.steps = steps
        self.num_classes = num_classes
        self._arrays = {"train": train, "dev": dev}
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._draws = torch.Generator().manual_seed(seed)
        # The factory runs outside fit's seeded RNG fork, so h gets its own seed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.attacker = inference_model(num_classes)
        self.attacker_optimizer = torch.optim.Adam(self.attacker.parameters(), lr=INFERENCE_LR)
        self.inference_steps = 0
        self.classifier_steps = 0
        self.attacker_optimizer.register_step_post_hook(self._count_inference)

    def _count_inference(self, optimizer, args, kwargs) -> None:
        self.inference_steps += 1

    def _count_classifier(self, optimizer, args, kwargs) -> None:
        self.classifier_steps += 1

    def prepare(self, model, optimizer, loader):
        device = next(model.parameters()).device
        self.attacker.to(device)
        for name, (x, y) in self._arrays.items():
            self._tensors[name] = (
                torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device),
                torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64), device=device))
        optimizer.register_step_post_hook(self._count_classifier)
        return model, optimizer, loader

    def _draw(self, part: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._tensors[part]
        n = len(y)
        if size <= n:
            index = torch.randperm(n, generator=self._draws)[:size]
        else:
            index = torch.randint(n, (size,), generator=self._draws)
        index = index.to(x.device)
        return x[index], y[index]

    def _attack_inputs(self, prob: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([prob, F.one_hot(y, self.num_classes).to(prob.dtype)], dim=1)

    def before_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """k steps of h on fresh member (train) and non-member (dev) batches."""
        if not self._tensors:
            raise RuntimeError("AdvRegHook.prepare must run before training")
        model.eval()
        size = len(y)
        for _ in range(self.steps):
            x_in, y_in = self._draw("train", size)
            x_out, y_out = self._draw("dev", size)
            with torch.no_grad():
                p_in = torch.softmax(model(x_in), dim=1)
                p_out = torch.softmax(model(x_out), dim=1)
            logit_in = self.attacker(self._attack_inputs(p_in, y_in)).squeeze(1)
            logit_out = self.attacker(self._attack_inputs(p_out, y_out)).squeeze(1)
            # -G(h): log h = logsigmoid(logit), log(1 - h) = logsigmoid(-logit).
            loss = -(F.logsigmoid(logit_in).mean() + F.logsigmoid(-logit_out).mean())
            self.attacker_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.attacker_optimizer.step()

    def membership_gain(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """mean log h(softmax(logits), y), differentiable in ``logits``, with h fixed."""
        with _frozen(self.attacker):
            member_logit = self.attacker(self._attack_inputs(torch.softmax(logits, dim=1), y))
        return F.logsigmoid(member_logit.squeeze(1)).mean()

    def loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y) + self.strength * self.membership_gain(logits, y)

    def metadata(self) -> dict[str, Any]:
        return {"advreg_strength": self.strength, "advreg_steps": self.steps,
                "advreg_inference_steps": self.inference_steps,
                "advreg_classifier_steps": self.classifier_steps}


def make_advreg_hook(defense, *, train=None, dev=None, num_classes=None, seed=0,
                     **context: Any) -> AdvRegHook:
    """Registry factory: theta = ``defense.strength``, k = ``defense.advreg_steps``."""
    if num_classes is None:
        raise ValueError("AdvReg needs num_classes in its context")
    return AdvRegHook(strength=defense.strength, steps=defense.advreg_steps, train=train,
                      dev=dev, num_classes=num_classes, seed=seed)
