"""Reference models' outputs on a sample set, computed once and stored.

LiRA and RMIA score from the outputs of the cell's shadow models (offline) or
reference models (online) on the audited samples and on the population, and from the
victim's outputs on the population. Each is one forward pass of one stored model over
one set of pool indices, so it is stored once under a content key: the model's key
and a hash of the indices. A re-evaluation, a new attack, or a cell grown from N to
2N references reads the rows that exist and runs only the models that have none.

A row holds the softmax outputs (float32, from which p_y and the logit-scaled phi
follow), and, for the audited samples, the model's IN mask: True where it trained on
the sample.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from mia_ray.keys import canonical_json
from mia_ray.pipeline import load_model
from mia_ray.predict import predict_proba
from mia_ray.provenance import code_version
from mia_ray.specs import ModelSpec
from mia_ray.store import ArtifactStore

SIGNALS = "signals"


def _probs_on(model: torch.nn.Module, x: np.ndarray, index: np.ndarray,
              device: torch.device, chunk: int = 8192) -> np.ndarray:
    """Softmax of ``model`` on ``x[index]``, gathered a chunk at a time (no pool-sized copy)."""
    return np.concatenate([predict_proba(model, x[index[i:i + chunk]], device=device)
                           for i in range(0, len(index), chunk)])


def signals_key(model: ModelSpec, samples: np.ndarray) -> str:
    """Content key of one model's row on one ordered set of pool indices."""
    digest = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.int64).tobytes())
    text = canonical_json({"model": model.key(), "samples": digest.hexdigest(),
                           "count": int(len(samples))})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def model_signals(model: ModelSpec, store: ArtifactStore, x: np.ndarray, samples: np.ndarray,
                  *, device: torch.device, train: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """``{"prob": (len(samples), C)}`` of ``model`` on ``x[samples]``, and ``"in_mask"``
    (True where ``samples`` is in ``train``) when the model's training indices are given;
    read from the store when a row exists, else computed and stored."""
    key = signals_key(model, samples)
    if store.has(SIGNALS, key):
        return store.arrays(SIGNALS, key)
    net = load_model(model, store).to(device)
    row = {"prob": _probs_on(net, x, samples, device).astype(np.float32)}
    if train is not None:
        row["in_mask"] = np.isin(samples, train)
    store.put_arrays(SIGNALS, key, row)
    store.put_meta(SIGNALS, key, {"model_key": model.key(), "samples": int(len(samples)),
                                  "code_version": code_version()})
    return row
