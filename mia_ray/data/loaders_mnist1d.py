"""MNIST-1D (Greydanus 2020): 10 classes of 40-point 1-D signals, generated offline.

The ``mnist1d`` package turns ten hand-made templates into noisy, shifted, scaled and
sheared signals. We call its procedural generator (``mnist1d.data.make_dataset``) with
the published arguments written out below, never its ``get_dataset``, which would
download a pickle and unpickle it. No files, no download: the pool is regenerated
(about a second) and cached in-process like any pool; a sweep stages it once.
"""

from __future__ import annotations

import random

import numpy as np

from mia_ray.catalog import DATASETS

NAME = "mnist1d"
POOL_SIZE = DATASETS[NAME].pool
(NUM_FEATURES,) = DATASETS[NAME].input_shape
NUM_CLASSES = DATASETS[NAME].num_classes
SEED = 42
# The generator's published arguments (mnist1d 0.0.2, ``get_dataset_args``), fixed
# here so a change of the package's defaults cannot change our data silently.
ARGS = {
    "num_samples": POOL_SIZE,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": NUM_FEATURES,
    "seed": SEED,
}


def generate(num_samples: int = POOL_SIZE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, 40), y int64 (N,)): the generator's train split then its test split.

    The generator seeds and draws from the global NumPy and ``random`` states; both are
    restored afterwards, so loading a pool never changes another caller's draws.
    """
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    saved = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(ObjectView({**ARGS, "num_samples": num_samples, "seed": seed}))
    finally:
        np.random.set_state(saved[0])
        random.setstate(saved[1])
    # Already standardised by the generator over the whole pool (mean 0, std 1).
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return x, y


class Mnist1d:
    """The generated pool: no files, no download."""

    name = NAME

    def files(self, root: str) -> list[str]:
        return []

    def check(self, root: str, download: bool) -> None:
        return None

    def load(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        return generate()


SOURCES = {NAME: Mnist1d()}
