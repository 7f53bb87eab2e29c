"""Join the running Ray cluster or start a local one, with the dashboard on localhost and
token auth on. Which cluster, and the forms an address can take: :mod:`mia_ray.engine.address`."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import ray

from mia_ray.eager import ENV as COMPILE_ENV
from mia_ray.engine.address import ADDRESS_ENV, check_address

ALREADY_UP = "this process's"
"""How a sweep came to a Ray that its own process had started or joined before."""

# Environment settings of this code base that the workers must see as the driver does.
FORWARDED_ENV = (COMPILE_ENV,)


def worker_runtime_env() -> dict | None:
    """Ray's ``runtime_env`` that hands the workers the driver's :data:`FORWARDED_ENV`.

    Without it a worker on another node would not see, say, ``MIA_RAY_COMPILE_ATTACKS=0``
    set where the sweep was started.
    """
    forwarded = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    return {"env_vars": forwarded} if forwarded else None


@dataclass(frozen=True)
class Connection:
    """The cluster a sweep runs on, and how it came to run there."""

    joined: bool
    """True: a cluster that was already running (it may carry an autoscaler's config)."""
    how: str
    """Why this cluster: "--address", "RAY_ADDRESS", "ray start on this node", "--local",
    "no running cluster found", or "this process's" (Ray already up in the process)."""
    nodes: int
    gpus: float

    def line(self) -> str:
        """The one line a sweep prints about where it runs."""
        where = ("joined the running Ray cluster" if self.joined
                 else "using the Ray cluster" if self.how == ALREADY_UP
                 else "started a local Ray cluster")
        return (f"ray: {where} ({self.how}): {self.nodes} node{'s' * (self.nodes != 1)}, "
                f"{self.gpus:g} GPU{'s' * (self.gpus != 1)}")


def running_cluster() -> tuple[str, str] | None:
    """(address, how it was found) of the cluster ``ray.init()`` with no address joins:
    ``RAY_ADDRESS``, else the one ``ray start`` recorded on this node (its
    ``ray_current_cluster`` file under Ray's temp folder, ``$RAY_TMPDIR/ray`` or
    ``/tmp/ray``); None when there is neither."""
    if os.environ.get(ADDRESS_ENV):
        return os.environ[ADDRESS_ENV], ADDRESS_ENV
    # Ray's own lookup, so this finds exactly what ray.init() would.
    from ray._private.services import find_bootstrap_address

    found = find_bootstrap_address(None)
    if not found:
        return None
    if not _answers(found):
        # A head that ended without `ray stop` leaves its address behind; joining it
        # would fail after a long timeout, so say so and run locally instead.
        print(f"ray: the cluster recorded at {found} (by ray start on this node) does not "
              "answer; starting a local one", flush=True)
        return None
    return found, "ray start on this node"


def _answers(address: str, timeout_s: float = 3.0) -> bool:
    """Whether something listens at ``address`` (HOST:PORT), the cluster's GCS."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def connect(*, address: str | None = None, local: bool = False,
            num_cpus: int | None = None, num_gpus: int | None = None) -> Connection:
    """Join ``address``, else the cluster running on this node, else start a local one
    (``local``: always a local one); reuse the Ray this process already has.

    ``num_cpus`` and ``num_gpus`` size a local cluster only; a joined one has its own.
    Token authentication stays on: Ray >= 2.60 turns it on for a local ``ray.init()``
    and writes a token to ``~/.ray/auth_token`` unless ``RAY_AUTH_MODE`` says
    otherwise, and cluster.yaml sets it for ``ray up`` clusters. (Setting the variable
    here would be too late: Ray reads it when it is imported.) A cluster without it
    runs any code sent to its dashboard port. The local dashboard stays off; a
    cluster's binds to 127.0.0.1 (reach it through ``ray dashboard cluster.yaml``).
    """
    check_address(address, local=local)
    if ray.is_initialized():
        return _describe(joined=bool(address), how=ALREADY_UP)
    runtime_env = worker_runtime_env()
    found = (address, "--address") if address else (None if local else running_cluster())
    if found is not None:
        ray.init(address=found[0], log_to_driver=False, runtime_env=runtime_env)
        return _describe(joined=True, how=found[1])
    if num_cpus is None:
        # Trials mostly wait on builds: one logical CPU of slack lets a trainer run on
        # every core while trials score cells beside them.
        num_cpus = (os.cpu_count() or 1) + 1
    # "local": start our own even when another Ray runs on this machine; without it
    # ray.init would try to join that one (and refuse num_cpus for it).
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             dashboard_host="127.0.0.1", log_to_driver=False, runtime_env=runtime_env)
    return _describe(joined=False, how="--local" if local else "no running cluster found")


def _describe(*, joined: bool, how: str) -> Connection:
    alive = [n for n in ray.nodes() if n["Alive"]]
    return Connection(joined=joined, how=how, nodes=len(alive),
                      gpus=float(sum(n["Resources"].get("GPU", 0.0) for n in alive)))
