"""The audited model's member set.

``python -m mia_ray.audit`` knows which samples trained the user's model (an ``.npy``
of indices or a boolean mask); every other sample of the pool is a non-member. This
module reads and checks that set; :func:`mia_ray.data.splits.audit_split` cuts the
splits from it, and a sweep on a cluster stages it (:mod:`mia_ray.data.staging`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from mia_ray.errors import SpecError

# Fewest non-members the audit accepts: half to attack the model against, half for
# shadows whose train/dev/test splits each need samples.
MIN_NONMEMBERS = 20
# Fewest members: each half of the audited samples (mia_ray.audit.compare) needs two
# members for a bootstrap interval.
MIN_MEMBERS = 4


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
    if len(idx) < MIN_MEMBERS:
        raise SpecError("members", path, f"at least {MIN_MEMBERS} members (the audit chooses "
                        "its attack on half of them and measures on the other half, with "
                        f"bootstrap intervals); it lists {len(idx)}")
    nonmembers = n - len(idx)
    if nonmembers < MIN_NONMEMBERS:
        raise SpecError("members", path, f"a member set leaving at least {MIN_NONMEMBERS} "
                        f"non-members for the shadow models and the audit; {len(idx)} of the "
                        f"{n} samples are members, leaving {nonmembers}")
    return idx


def members_hash(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]
