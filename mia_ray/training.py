"""Training and evaluation of target/shadow models: plain PyTorch, no Ray.

``fit`` is the one loop used both for the original models and for fine-tuning
pruned ones. Defenses change it only through a :class:`TrainingHook`, so the loop
itself stays one readable function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from mia_ray.specs import TrainSpec


def pick_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TrainingHook:
    """Where a defense plugs into :func:`fit`. The defaults are plain training."""

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                loader: DataLoader) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
        """Called once before the first epoch; may wrap any of the three (e.g. Opacus).

        ``loader`` yields ``(x, y)`` batches already on the training device; its
        ``dataset`` is a :class:`~torch.utils.data.TensorDataset` of the whole split.
        """
        return model, optimizer, loader

    def loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The scalar the optimizer minimises for one batch."""
        return F.cross_entropy(logits, y)

    def before_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Runs before each classifier step (e.g. AdvReg's inference-model steps).

        ``fit`` puts the model back in training mode afterwards.
        """

    def metadata(self) -> dict[str, Any]:
        """Numbers to record with the trained model (e.g. a DP epsilon)."""
        return {}


def should_stop(epochs_without_gain: int, patience: int) -> bool:
    """The early-stopping rule of every training loop (plain, stacked, fine-tuning).

    Stop once MORE than ``patience`` epochs in a row brought no dev-accuracy gain, so
    with patience 5 after the 6th: the authors' ``count > early_stop`` (docs/method.md,
    "Training").
    """
    return epochs_without_gain > patience


@dataclass
class TrainReport:
    """What one call of :func:`fit` did."""

    epochs_run: int
    best_epoch: int
    """1-based epoch whose weights were kept."""
    best_dev_acc: float
    seconds: float
    device: str
    extra: dict = field(default_factory=dict)
    """The hook's :meth:`TrainingHook.metadata`."""
    checkpoints: dict = field(default_factory=dict)
    """epoch -> the weights after that epoch, for each of ``checkpoint_epochs`` (after
    the last epoch run, if training stopped before it): rewind points of ``imp``."""


class _BatchedTensors(TensorDataset):
    """A TensorDataset that slices a whole batch at once instead of sample by sample.

    The DataLoader calls ``__getitems__`` with a batch of indices; one fancy-index
    per tensor is far cheaper than stacking 128 single-sample views, above all on
    a GPU where each would be its own kernel launch.
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.tensors[0].device)
        return tuple(t[idx] for t in self.tensors)


def _pass_batch(batch):
    return batch


def _as_tensors(x: np.ndarray, y: np.ndarray,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)
    return xt, yt


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _refresh_pruned(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * mask`` on every pruned module.

    The pruning pre-hook only does this on the next forward; after loading a state
    dict the plain ``weight`` attribute would otherwise still hold the old values.
    """
    with torch.no_grad():
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    hook(module, None)


def fit(model: nn.Module, train: tuple[np.ndarray, np.ndarray],
        dev: tuple[np.ndarray, np.ndarray], spec: TrainSpec, *, seed: int,
        device: torch.device | None = None, hook: TrainingHook | None = None,
        checkpoint_epochs: tuple[int, ...] = ()) -> TrainReport:
    """Train with Adam and early stopping on dev accuracy; keep the best weights.

    Works unchanged on a model carrying ``torch.nn.utils.prune`` masks: the
    optimizer updates ``*_orig`` and the masks keep pruned weights at zero.

    Args:
        model: Trained in place and moved to ``device``.
        train: ``(x, y)`` arrays of the training split.
        dev: ``(x, y)`` arrays used for early stopping only.
        spec: Optimiser settings, epoch budget and patience.
        seed: Seeds batch order and dropout; the same seed on the same device
            gives the same weights.
        device: Defaults to :func:`pick_device`.
        hook: A defense's changes to the loop; ``None`` is plain training.
        checkpoint_epochs: Keep a copy of the weights after each of these epochs in
            the report (the original training saves ``imp``'s rewind point this way).

    Returns:
        A :class:`TrainReport`; the model holds the best-dev weights on return.
    """
    device = pick_device() if device is None else torch.device(device)
    hook = TrainingHook() if hook is None else hook
    start = time.perf_counter()
    model.to(device)
    x_tr, y_tr = _as_tensors(*train, device)
    x_dev, y_dev = _as_tensors(*dev, device)

    gen = torch.Generator().manual_seed(seed)
    sampler = BatchSampler(RandomSampler(range(len(y_tr)), generator=gen),
                           spec.batch_size, drop_last=False)
    loader = DataLoader(_BatchedTensors(x_tr, y_tr), batch_sampler=sampler,
                        collate_fn=_pass_batch, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr,
                                 weight_decay=spec.weight_decay)

    # Dropout (and any noise a hook draws) reads the global RNG, which has no
    # generator argument; seed it inside a fork so the caller's stream is restored.
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        net, optimizer, loader = hook.prepare(model, optimizer, loader)
        best_acc, best_epoch, best_state, stale = -1.0, 0, None, 0
        checkpoints: dict[int, dict[str, torch.Tensor]] = {}
        epoch = 0
        for epoch in range(1, spec.max_epochs + 1):
            for xb, yb in loader:
                hook.before_step(net, xb, yb)
                net.train()
                optimizer.zero_grad(set_to_none=True)
                loss = hook.loss(net(xb), yb, xb)
                loss.backward()
                optimizer.step()
            # The wrapped net shares its parameters with ``model``; the unwrapped
            # one has the plain state_dict keys that callers save and reload.
            stop = False
            acc = accuracy(model, x_dev, y_dev, device=device)
            if acc > best_acc:
                best_acc, best_epoch, stale = acc, epoch, 0
                best_state = _copy_state(model)
            else:
                stale += 1
                stop = should_stop(stale, spec.patience)
            for wanted in checkpoint_epochs:
                if wanted not in checkpoints and (
                        epoch >= wanted or stop or epoch == spec.max_epochs):
                    checkpoints[wanted] = _copy_state(model)
            if stop:
                break
    model.load_state_dict(best_state)
    _refresh_pruned(model)
    model.train()
    return TrainReport(epochs_run=epoch, best_epoch=best_epoch, best_dev_acc=best_acc,
                       seconds=time.perf_counter() - start, device=str(device),
                       extra=dict(hook.metadata()), checkpoints=checkpoints)


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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
        _refresh_pruned(model)
    return torch.cat(out)


def predict_proba(model: nn.Module, x: np.ndarray, *, device: torch.device | None = None,
                  batch_size: int = 1024) -> np.ndarray:
    """Softmax outputs in eval mode, as a float32 array of shape (n, C).

    ``device`` defaults to where the model's parameters are; the model's train/eval
    mode is left as it was.
    """
    device = _model_device(model) if device is None else torch.device(device)
    if len(x) == 0:
        raise ValueError("predict_proba needs at least one sample")
    return torch.softmax(_logits(model, x, device, batch_size), dim=1).cpu().numpy()


def accuracy(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *,
             device: torch.device | None = None, batch_size: int = 1024) -> float:
    """Top-1 accuracy in eval mode; 0.0 on an empty set."""
    if len(y) == 0:
        return 0.0
    device = _model_device(model) if device is None else torch.device(device)
    pred = _logits(model, x, device, batch_size).argmax(dim=1)
    y = torch.as_tensor(y, device=device)
    return float((pred == y).float().mean().item())
