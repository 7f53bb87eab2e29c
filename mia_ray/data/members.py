"""The audit's split: the audited model's members, and what its shadows train on.

``python -m mia_ray.audit`` knows which samples trained the user's model (an ``.npy``
of indices or a boolean mask). Every other sample of the pool is a non-member. They
are shuffled once with the dataset seed and used like this:

- the audited model's **test** split (the non-members it is attacked against) is the
  first ``min(members, non-members // 2)`` of them; no shadow ever trains on these,
  so LiRA and RMIA's shadows stay OUT models for every audited sample;
- its **dev** split (early stopping while a pruned variant is fine-tuned) is a tenth of
  the remaining non-members;
- shadow i permutes the remaining non-members with ``seed + 1 + i``: the first half
  are its members (train), a fifth of the rest its dev split, the others its test
  split. Shadows never see an audited member.
"""

from __future__ import annotations

import hashlib

import numpy as np

from mia_ray.errors import SpecError

# Fewest non-members the audit accepts: half to attack the model against, half for
# shadows whose train/dev/test splits each need samples.
MIN_NONMEMBERS = 20


def read_members(path: str, n: int) -> np.ndarray:
    """Sorted member indices from an ``.npy`` of indices or a boolean mask of length n."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SpecError("members", path, f"an .npy of sample indices or a boolean mask, "
                        f"readable without pickle ({e})") from e
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise SpecError("members", path, f"a boolean mask of length {n} (the dataset's "
                            f"size); it has shape {arr.shape}")
        idx = np.flatnonzero(arr)
    else:
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise SpecError("members", path, f"a 1-D integer array of indices (or a boolean "
                            f"mask); it has dtype {arr.dtype} and shape {arr.shape}")
        bad = np.flatnonzero((arr < 0) | (arr >= n))
        if bad.size:
            raise SpecError("members", path, f"indices in [0, {n - 1}] (the dataset has {n} "
                            f"samples); position {int(bad[0])} holds {int(arr[bad[0]])}")
        idx = np.unique(arr)
        if len(idx) != len(arr):
            raise SpecError("members", path, "each index once; it repeats "
                            f"{len(arr) - len(idx)} of them")
    idx = idx.astype(np.int64)
    if len(idx) == 0:
        raise SpecError("members", path, "at least one member")
    nonmembers = n - len(idx)
    if nonmembers < MIN_NONMEMBERS:
        raise SpecError("members", path, f"a member set leaving at least {MIN_NONMEMBERS} "
                        f"non-members for the shadow models and the audit; {len(idx)} of the "
                        f"{n} samples are members, leaving {nonmembers}")
    return idx


def members_hash(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def audit_split(members: np.ndarray, n: int, seed: int, role: str, index: int):
    """The Split of the audited model (role 'victim') or of shadow ``index``."""
    from mia_ray.data.splits import Split

    others = np.setdiff1d(np.arange(n, dtype=np.int64), members)
    others = np.random.default_rng(seed).permutation(others)
    n_test = min(len(members), len(others) // 2)
    audited, rest = others[:n_test], others[n_test:]
    if role == "victim":
        n_dev = max(1, len(rest) // 10)
        return Split(train=np.sort(members), dev=np.sort(rest[:n_dev]), test=np.sort(audited))
    order = np.random.default_rng(seed + 1 + index).permutation(rest)
    half = len(order) // 2
    n_dev = max(1, (len(order) - half) // 5)
    return Split(train=np.sort(order[:half]), dev=np.sort(order[half:half + n_dev]),
                 test=np.sort(order[half + n_dev:]))
