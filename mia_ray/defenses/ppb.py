"""PPB, the paper's defense: pull the sorted output distributions of a batch together.

Pruning and fine-tuning make members' outputs more confident than non-members'. PPB
adds a KL term between the sorted logits of one half of each mini-batch and the
other half, so every sample's sorted prediction is pushed toward the same shape
whatever its class and membership. Sorting makes the term class-agnostic: it
compares confidence profiles, not which class was predicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mia_ray.training import TrainingHook


def ppb_loss(logits: torch.Tensor, y: torch.Tensor, strength: float) -> torch.Tensor:
    """Cross-entropy plus ``strength`` times the KL between the batch's sorted halves.

    Sample ``i`` of the first half is paired with sample ``i + B // 2``; with an odd
    batch the last sample only enters the cross-entropy. The KL is
    ``KL(softmax(sorted second) || softmax(sorted first))``, summed over classes and
    averaged over pairs; gradients flow through both halves.

    Args:
        logits: (B, C) raw outputs.
        y: (B,) class indices.
        strength: lambda >= 0; at 0 the result is exactly ``F.cross_entropy``.

    Returns:
        The scalar loss.

    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> float(ppb_loss(logits, torch.tensor([0, 1]), 4.0)) == float(F.cross_entropy(
    ...     logits, torch.tensor([0, 1])))  # the same sorted profile: KL is 0
    True
    """
    ce = F.cross_entropy(logits, y)
    half = logits.shape[0] // 2
    if strength == 0 or half == 0:
        return ce
    ranked = torch.sort(logits, dim=1, descending=True).values
    log_q = F.log_softmax(ranked[:half], dim=1)
    log_p = F.log_softmax(ranked[half:2 * half], dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return ce + strength * kl


class PPBHook(TrainingHook):
    """Fine-tune with :func:`ppb_loss` in place of plain cross-entropy."""

    def __init__(self, strength: float):
        self.strength = float(strength)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ppb_loss(logits, y, self.strength)

    def metadata(self) -> dict:
        return {"ppb_strength": self.strength}
