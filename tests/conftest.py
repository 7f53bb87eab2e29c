"""Shared fixtures: one real Ray cluster per test session, started only when asked for."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every test's networks are tiny: on a shared 2-core machine, extra intra-op
    threads fighting other processes cost far more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 4 logical CPUs and one fake GPU, shared by every engine test.

    4 logical CPUs on the 2-core test machine, on purpose: the engine tests run four
    trainer actors at 0.5 CPU beside Tune trials that mostly wait on them, and with
    only 2 logical CPUs the trainers would leave no room for a trial. ``num_gpus=1``
    on a machine without CUDA lets the fractional-GPU scheduling run for real while
    the code itself falls back to the CPU.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(**SESSION_RAY)
    yield ray
    ray.shutdown()


# address="local": always a Ray of our own, even while another cluster runs on the
# machine (a Cluster records its address for every later ray.init() to join).
SESSION_RAY = dict(address="local", num_cpus=4, num_gpus=1, include_dashboard=False,
                   log_to_driver=False, configure_logging=False)


@pytest.fixture
def own_ray():
    """For a test that starts its own (multi-node) Ray in this process: the session's
    Ray is shut down first and started again afterwards, as later tests expect it."""
    import ray

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
    if was_up:
        ray.init(**SESSION_RAY)


# --- tests-b: one finished tiny sweep, grown by tests/test_grow.py and tests/test_seeds.py


@pytest.fixture(scope="session")
def finished_tiny_sweep(ray_session, tmp_path_factory):
    """A finished sweep of the tiny grid (digits, fc, L1 at 0.7, the original and full
    knowledge, PPB at 0 and 4, K=2, threshold attacks), run once per session: each test
    that grows it copies it first (``grown_from``), so each still grows a sweep of its
    own. Returns the grid, the storage folder and the sweep's outcome."""
    from sweep_driver import tiny_grid

    from mia_ray.engine import run_sweep
    from mia_ray.specs import AttackSpec

    grid = tiny_grid(archs=("fc",), methods=("l1_unstructured",),
                     knowledge=("original", "full"), strengths=(0.0, 4.0),
                     attacks=AttackSpec(names=("conf", "gap"), epochs=1), num_trainers=2)
    storage = tmp_path_factory.mktemp("finished-tiny-sweep")
    return grid, storage, run_sweep(grid, str(storage), progress=False)


def grown_from(finished, tmp_path):
    """A copy of ``finished_tiny_sweep``'s storage in ``tmp_path``, for a test to grow."""
    import shutil

    grid, storage, outcome = finished
    copy = tmp_path / "storage"
    shutil.copytree(storage, copy)
    return grid, copy, outcome
