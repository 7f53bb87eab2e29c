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
    """A 2-CPU local Ray with one fake GPU, shared by every engine test.

    ``num_gpus=1`` on a machine without CUDA lets the fractional-GPU scheduling run
    for real while the code itself falls back to the CPU.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # address="local": always a fresh cluster of our own, never one that some other
    # process on the machine started with `ray start` (ray.init() would join that one
    # and refuse num_cpus/num_gpus).
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
