"""The engine tests' tiny grid, and a progress callback that crashes the driver.

:func:`die_after_cells` SIGKILLs the driver's whole process group (the driver and the
Ray it started) the moment Tune reports the N-th finished cell: a crash at a fixed
point in the order of events, not at a moment a test had to guess
(``tests/test_engine.py``, the resume test, runs such a driver).
"""

from __future__ import annotations

import os
import signal

from mia_ray.grid import GridSpec, Resources
from mia_ray.specs import AttackSpec, TrainSpec


def tiny_grid(**changes) -> GridSpec:
    """digits, small_cnn, 2 methods x 1 sparsity x 3 knowledge x 2 strengths, K=2."""
    base = dict(
        datasets=("digits",), archs=("small_cnn",),
        methods=("l1_unstructured", "slimming"), sparsities=(0.7,),
        knowledge=("original", "full", "defense_unknown"),
        defenses=("ppb",), strengths=(0.0, 4.0), num_shadows=2,
        attacks=AttackSpec(names=("conf", "top1_conf", "gap", "nn"), epochs=1),
        train=TrainSpec(max_epochs=3), finetune=TrainSpec(max_epochs=2),
        trainer=Resources(cpus=1.0), trial=Resources(cpus=0.5),
    )
    return GridSpec(**{**base, **changes})


def die_after_cells(count: int):
    """A stand-in for the sweep's progress callback that crashes after ``count`` cells."""
    from ray import tune

    class DieAfterCells(tune.Callback):
        def __init__(self, *_, **__):
            self.finished = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.finished += 1
            if self.finished >= count:
                os.killpg(os.getpgid(0), signal.SIGKILL)

    return DieAfterCells
