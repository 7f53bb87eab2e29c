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
