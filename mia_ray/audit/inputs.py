"""Read and check what the user audits: the trained model and its member set.

Everything here runs before any work starts and raises :class:`SpecError` with one
message naming the option, the value and what is allowed. The model is read with
``torch.load(weights_only=True)`` (a state_dict) or ``torch.jit.load`` (TorchScript);
its weights are loaded into the architecture named by ``--arch`` or, without it,
into the built-in architecture whose parameter names and shapes they match.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from mia_ray.archs import check_outputs
from mia_ray.catalog import ARCHS, arch_info
from mia_ray.data.custom import content_hash
from mia_ray.errors import SpecError
from mia_ray.imp_schedule import default_rewind_epoch
from mia_ray.models import build_model
from mia_ray.pipeline import MODELS, _model_data, _save_model, now_utc
from mia_ray.predict import accuracy
from mia_ray.resolution import resolve_arch
from mia_ray.specs import DatasetSpec
from mia_ray.store import ArtifactStore


def read_state(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict ``.pt`` or of a TorchScript file."""
    if not os.path.isfile(path):
        raise SpecError("model", path, "an existing state_dict .pt or TorchScript file")
    try:
        with warnings.catch_warnings():  # its "looks like TorchScript" notice: handled below
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - a user's file fails in many ways; say which
        try:  # TorchScript archives are not weights_only-loadable; jit reads them itself
            with warnings.catch_warnings():  # jit.load's deprecation notice is not ours
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception as e:  # jit raises RuntimeError or its own types
            raise SpecError("model", path, "a state_dict saved with torch.save(model."
                            "state_dict()) or a TorchScript file (torch.jit.save); "
                            f"it is neither ({str(first).splitlines()[0][:200]})") from e
    if isinstance(state, nn.Module):  # torch.load hands TorchScript archives to jit.load
        state = state.state_dict()
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                         dict):
        state = state["state_dict"]  # a common checkpoint layout
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise SpecError("model", path, "a state_dict: a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _fits(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    mine = model.state_dict()
    return mine.keys() == state.keys() and all(mine[k].shape == state[k].shape for k in mine)


def load_audited(path: str, arch: str, dataset: DatasetSpec) -> tuple[nn.Module, str]:
    """(model with the user's weights, its architecture, resolved for the data),
    checked against the data."""
    state = read_state(path)
    info = dataset.info
    if arch:
        arch = resolve_arch(arch, [info])  # importable, returns a module, outputs fit
        arch_info(arch, info)  # a built-in name: one the catalog holds
        candidates = [arch]
    else:
        candidates = [a for a, i in ARCHS.items() if info.kind in i.input_kinds]
    for name in candidates:
        model = build_model(name, dataset, seed=0)
        if _fits(model, state):
            model.load_state_dict(state)
            break
    else:
        if arch:
            model = build_model(arch, dataset, seed=0)
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                problem = " ".join(str(e).split())[:300]
                raise SpecError("model", path, f"weights of --arch {arch!r} for this data "
                                f"({info.num_classes} classes, inputs {info.input_shape}): "
                                f"{problem}") from e
        raise SpecError("model", path, "weights of a built-in architecture for this data "
                        f"({', '.join(candidates)}; {info.num_classes} classes, inputs "
                        f"{info.input_shape}), or pass --arch package.module:function")
    check_outputs(model, tuple(info.input_shape), info.num_classes, "model", path)
    model.eval()
    return model, name


def model_hash(path: str) -> str:
    return content_hash(path)


def import_victim(spec, model: nn.Module, store: ArtifactStore, results,
                  rewind_epoch: int = 0) -> dict[str, Any]:
    """Put the user's model in the store as the audit's unpruned victim, with its row.

    A model that comes trained has no early weights to rewind to: its ``imp`` rounds
    rewind to the imported weights themselves (iterative pruning with fine-tuning),
    so they are saved as its rewind point (docs/method.md, "Iterative pruning").

    The engine then finds it there like any built model and prunes it for every
    (method, sparsity); a rerun finds it too and imports nothing.
    """
    if store.has(MODELS, spec.key()):
        return store.meta(MODELS, spec.key())["row"]
    data = _model_data(spec)
    device = torch.device("cpu")
    row = {
        "model_key": spec.key(), "parent_key": None, "dataset": spec.dataset.name,
        "arch": spec.arch, "seed": spec.dataset.seed, "role": "victim", "index": 0,
        "method": "none", "sparsity": 0.0, "defense": "none", "strength": 0.0,
        "train_acc": accuracy(model, *data["train"], device=device),
        "dev_acc": accuracy(model, *data["dev"], device=device),
        "test_acc": accuracy(model, *data["test"], device=device),
        "measured_sparsity": 0.0, "epochs": 0, "best_epoch": 0, "seconds": 0.0,
        "trained_together": 1, "device": "imported", "epsilon": float("nan"),
        "code_version": "imported", "finished_at": now_utc(),
        "layer_sparsity": None, "rounds": 0,
    }
    epoch = rewind_epoch or default_rewind_epoch(spec.train.max_epochs)
    model.rewind_points = {epoch: model.state_dict()}
    return _save_model(spec, model, row, store, results)
