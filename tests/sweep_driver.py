"""The engine tests' tiny grid, a progress callback that crashes the driver, and a hold
that makes a sweep's first builds wait for every trainer.

:func:`die_after_cells` SIGKILLs the driver's whole process group (the driver and the
Ray it started) the moment Tune reports the N-th finished cell: a crash at a fixed
point in the order of events, not at a moment a test had to guess
(``tests/test_engine.py``, the resume test, runs such a driver).
:func:`hold_builds_until_trainers_run` does the same for the tests that check which
trainers built: they no longer depend on how far apart the trainers came up.
:func:`own_ray_tmpdir` keeps a test's cluster out of sight of a sweep run beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from mia_ray.grid import GridSpec, Resources
from mia_ray.specs import AttackSpec, TrainSpec


@contextlib.contextmanager
def own_ray_tmpdir():
    """A Ray temp folder of the test's own, for ``RAY_TMPDIR``: a cluster a test starts
    records its address there (``ray_current_cluster``), where a sweep run beside the
    tests, which joins the cluster recorded on its node, never finds it. The path is
    short: Ray's unix sockets live under it, and a socket path may not exceed 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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


def hold_builds_until_trainers_run(gate: str, trainers: int) -> dict:
    """The driver's ``ray.init`` ``runtime_env`` whose ``worker_process_setup_hook``
    holds the trainers: each marks the folder ``gate`` (made here) when it joins the
    pool (its first ping), and a trainer's first build waits until ``trainers`` have
    joined (at most 300 s).

    Trainers join as their nodes and worker processes come up, which can be many
    seconds apart on a loaded machine (an autoscaler's second worker, a raylet, torch
    imported), while a tiny grid's first cohort trains in under a second: unheld, the
    first trainer sometimes built everything before the second joined (CI, stop 34).
    Held, every trainer is in the coordinator's idle queue before the first build
    ends, so the jobs then wanted go one to each. Only when a trainer starts changes;
    what it builds, and the order the coordinator hands work out, do not.
    """

    def setup() -> None:
        import os
        import time

        import ray

        from mia_ray.engine.actors import Trainer

        ping, build_models = Trainer.ping, Trainer.build_models
        held = [True]  # this process's first build waits; later ones do not

        def joining_ping(self):
            open(os.path.join(gate, ray.get_runtime_context().get_actor_id()), "w").close()
            return ping(self)

        def held_build_models(self, specs):
            if held[0]:
                deadline = time.monotonic() + 300
                while len(os.listdir(gate)) < trainers and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)  # the last ping's reply reaches the coordinator (milliseconds)
                held[0] = False
            return build_models(self, specs)

        Trainer.ping, Trainer.build_models = joining_ping, held_build_models

    os.makedirs(gate, exist_ok=True)
    return {"worker_process_setup_hook": setup}
