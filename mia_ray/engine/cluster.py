"""Start a local Ray cluster or join one, with the dashboard on localhost and token auth on."""

from __future__ import annotations

import os

import ray

from mia_ray.eager import ENV as COMPILE_ENV

# Environment settings of this code base that the workers must see as the driver does.
FORWARDED_ENV = (COMPILE_ENV,)


def worker_runtime_env() -> dict | None:
    """Ray's ``runtime_env`` that hands the workers the driver's :data:`FORWARDED_ENV`.

    Without it a worker on another node would not see, say, ``MIA_RAY_COMPILE_ATTACKS=0``
    set where the sweep was started.
    """
    forwarded = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    return {"env_vars": forwarded} if forwarded else None


def connect(*, address: str | None = None, num_cpus: int | None = None,
            num_gpus: int | None = None) -> None:
    """Join ``address`` or start a local cluster; reuse one this process already has.

    Token authentication stays on: Ray >= 2.60 turns it on for a local ``ray.init()``
    and writes a token to ``~/.ray/auth_token`` unless ``RAY_AUTH_MODE`` says
    otherwise, and cluster.yaml sets it for ``ray up`` clusters. (Setting the variable
    here would be too late: Ray reads it when it is imported.) A cluster without it
    runs any code sent to its dashboard port. The local dashboard stays off; a
    cluster's binds to 127.0.0.1 (reach it through ``ray dashboard cluster.yaml``).
    """
    if ray.is_initialized():
        return
    runtime_env = worker_runtime_env()
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        return
    # "local": start our own even when another Ray runs on this machine; without it
    # ray.init would try to join that one (and refuse num_cpus for it).
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             dashboard_host="127.0.0.1", log_to_driver=False, runtime_env=runtime_env)
