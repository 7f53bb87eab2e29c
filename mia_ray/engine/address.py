"""Which Ray cluster a sweep runs on, checked before any work (no Ray imported here).

The forms a user can give, first that applies:

- ``--local``: a private Ray on this machine, even where a cluster runs;
- ``--address HOST:PORT`` or ``--address auto``: join that cluster;
- ``RAY_ADDRESS=HOST:PORT``: the same, from the environment (``ray job submit`` sets it);
- nothing: join the cluster running on this node (the one ``ray start`` or ``ray up``
  started, which ``ray.init()`` with no address finds), else start a private one.

Ray Client (``ray://HOST:10001``) is refused: the trainer pool is sized from the
autoscaler's config on the head (:mod:`mia_ray.engine.capacity`), which a client
outside the cluster cannot read, and the coordinator is pinned to the driver's node.
Run the command on the head instead (``ray attach``, ``ray submit``, ``ray job submit``).
"""

from __future__ import annotations

import os

from mia_ray.errors import SpecError

ADDRESS_ENV = "RAY_ADDRESS"
CLIENT_PREFIX = "ray://"
SUPPORTED_FORMS = ("no --address (join the cluster running on this node, else start a "
                   "local one), --address auto, --address HOST:PORT, RAY_ADDRESS=HOST:PORT, "
                   "or --local; to use a remote cluster, run the command on its head "
                   "(ray attach / ray submit / ray job submit)")


def check_address(address: str | None, *, local: bool = False) -> None:
    """Refuse, with one message, what :func:`mia_ray.engine.cluster.connect` cannot do:
    Ray Client addresses (given or in ``RAY_ADDRESS``) and ``--local`` beside an address."""
    if local and address:
        raise SpecError("address", address, "no address together with --local (--local "
                        "starts a private cluster)")
    for name, value in (("address", address), (ADDRESS_ENV, os.environ.get(ADDRESS_ENV))):
        if value and value.strip().startswith(CLIENT_PREFIX) and not (
                name == ADDRESS_ENV and (local or address)):
            raise SpecError(name, value, "not a Ray Client address (ray://): one of "
                            + SUPPORTED_FORMS)
