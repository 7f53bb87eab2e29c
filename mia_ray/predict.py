"""A model's outputs in eval mode: softmax, accuracy, and where it runs. No training.

Shared by the training loop (dev accuracy for early stopping), its backends and the
feature extraction, so none of them imports the others for these.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

PREDICT_BATCH = 1024
"""Samples per forward pass when predicting (no gradients: bigger only costs memory)."""


def pick_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def as_tensors(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 inputs and int64 labels on ``device``."""
    return (torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)
                            if isinstance(x, np.ndarray) else x, dtype=torch.float32).to(device),
            torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64)
                            if isinstance(y, np.ndarray) else y, dtype=torch.int64).to(device))


def refresh_pruned(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * mask`` on every pruned module.

    The pruning pre-hook only does this on the next forward; after loading a state
    dict the plain ``weight`` attribute would otherwise still hold the old values.
    """
    with torch.no_grad():
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    hook(module, None)


def _logits(model: nn.Module, x: np.ndarray | torch.Tensor, device: torch.device,
            batch_size: int) -> torch.Tensor:
    """Eval-mode logits on ``device``; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size]
                if not isinstance(xb, torch.Tensor):
                    xb = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32))
                out.append(model(xb.to(device)).float())
    finally:
        model.train(was_training)
        # The pruning pre-hook left inference-mode tensors in ``weight``; swap in
        # ordinary ones so that later autograd use or a deepcopy of the model works.
        refresh_pruned(model)
    return torch.cat(out)


def predict_proba(model: nn.Module, x: np.ndarray, *, device: torch.device | None = None,
                  batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Softmax outputs in eval mode, as a float32 array of shape (n, C).

    ``device`` defaults to where the model's parameters are; the model's train/eval
    mode is left as it was.
    """
    device = model_device(model) if device is None else torch.device(device)
    if len(x) == 0:
        raise ValueError("predict_proba needs at least one sample")
    return torch.softmax(_logits(model, x, device, batch_size), dim=1).cpu().numpy()


def accuracy(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *,
             device: torch.device | None = None, batch_size: int = PREDICT_BATCH) -> float:
    """Top-1 accuracy in eval mode; 0.0 on an empty set."""
    if len(y) == 0:
        return 0.0
    device = model_device(model) if device is None else torch.device(device)
    pred = _logits(model, x, device, batch_size).argmax(dim=1)
    y = torch.as_tensor(y, device=device)
    return float((pred == y).float().mean().item())
