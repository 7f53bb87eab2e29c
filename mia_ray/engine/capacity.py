"""How many trainer actors a sweep starts: enough for the cluster it can grow to.

An autoscaled cluster (cluster.yaml: a head with no CPU, GPU workers from zero) has
no worker when a sweep starts, so a pool sized from the resources present would be
one trainer for the whole grid. The pool is sized instead for the nodes the cluster
can reach, and created at once: the trainers that do not fit yet wait as pending
actors, and pending actors are what Ray's autoscaler adds nodes for. The coordinator
gives work only to trainers that are running (:mod:`mia_ray.engine.actors`), so a
node that never comes (a cloud quota, a smaller limit) slows the sweep but never
holds a build.

Where the planned nodes come from, first that applies:

1. ``--max-gpus G``: G GPUs in nodes shaped like the cluster's GPU nodes (from the
   autoscaler's config, else from the GPU nodes present); with no GPU node known,
   G / ``trainer_gpus`` trainers.
2. The autoscaler's config on the head (:data:`AUTOSCALER_CONFIG`, which ``ray up``
   writes and cluster.yaml's head reads), when the sweep joins a cluster: the head and
   every worker node type at its ``max_workers``, within the cluster's ``max_workers``.
3. The nodes present (a local Ray, a fixed cluster).

Every node holds as many trainers as its GPUs and CPUs allow after one trial's room,
so a cell whose builds are done is scored at once, beside busy trainers.

Trials never starve the trainers, by design (docs/cluster.md, "Trials and trainers"):
a Tune trial waits on its builds holding a token of memory only (:data:`TRIAL_MEMORY`,
no CPU or GPU) and scores its cell in a Ray task that holds the grid's ``trial``
resources only while it runs. Nothing that holds a CPU or GPU waits on a build, so
however many trials the first nodes of an autoscaled cluster take, every trainer can
still be placed.
:func:`concurrent_trials` bounds the trials (their processes) per trainer.
No Ray here: the caller passes the nodes, and these functions only count.
"""

from __future__ import annotations

import math
import os
from typing import Any

import yaml

from mia_ray.grid import Resources

AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where ``ray up`` puts the cluster's autoscaling config on the head node."""
RAY_DEFAULT_MAX_WORKERS = 2
"""Ray's own default for a config's ``max_workers`` when the config leaves it out."""

Node = dict[str, float]
TRIAL_MEMORY = 1 << 20
"""Bytes of Ray's ``memory`` resource a waiting trial holds: a token, since Tune refuses
a trial that asks for nothing. Every node has the resource and no trainer or scoring
task asks for it, so it never stands between a trainer and a node; it is small because
a node's share is what the machine had free when Ray started, which a busy machine
leaves small. :data:`TRIALS_PER_TRAINER` bounds the trial processes instead."""
TRIALS_PER_TRAINER = 2
"""Trials at once per trainer: one cell's builds in a trainer's hands and the next
cell's queued behind them, so no trainer idles while cells wait."""


def concurrent_trials(trainers: int) -> int:
    """The most Tune trials a sweep runs at once beside ``trainers`` trainers."""
    return max(1, TRIALS_PER_TRAINER * trainers)


def autoscaler_config(path: str = AUTOSCALER_CONFIG) -> dict[str, Any] | None:
    """The head's autoscaling config, or None where there is none (not a ``ray up`` head).

    ``ray up`` writes it as JSON, which YAML reads too; ``safe_load`` builds no objects.
    """
    try:
        with open(os.path.expanduser(path)) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) and config.get("available_node_types") else None


def reachable_nodes(config: dict[str, Any]) -> list[Node]:
    """The resources of every node the autoscaler may run at once: the head, then each
    worker type up to its ``max_workers`` (GPU-richest types first), no more workers in
    all than the config's ``max_workers``. A type without ``resources`` is left out:
    nothing can be planned on a node whose size is unknown."""
    types: dict[str, Any] = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    budget = int(config.get("max_workers", RAY_DEFAULT_MAX_WORKERS))
    nodes: list[Node] = [dict(types[head].get("resources") or {})] if head in types else []
    workers = [spec for name, spec in types.items() if name != head and spec.get("resources")]
    workers.sort(key=lambda spec: -float(spec["resources"].get("GPU", 0)))
    for spec in workers:
        count = max(0, min(int(spec.get("max_workers", budget)), budget))
        nodes += [dict(spec["resources"])] * count
        budget -= count
    return nodes


def trainers_per_node(node: Node, trainer: Resources, trial: Resources) -> int:
    """Trainers one node holds beside one trial (a node without room for a trial: 0)."""
    fit = math.floor((node.get("CPU", 0.0) - trial.cpus) / trainer.cpus + 1e-9)
    if trainer.gpus > 0:
        gpus = node.get("GPU", 0.0) - trial.gpus
        fit = min(fit, math.floor(gpus / trainer.gpus + 1e-9))
    return max(0, fit)


def pool_size(nodes: list[Node], trainer: Resources, trial: Resources,
              max_gpus: float = 0.0) -> int:
    """Trainers for ``nodes`` (the planned cluster); ``max_gpus`` > 0 plans that many GPUs
    in nodes shaped like the largest GPU node of ``nodes`` instead."""
    if max_gpus > 0:
        shapes = [n for n in nodes if n.get("GPU", 0) > 0]
        if not shapes:  # nothing says how the GPUs come: count GPU shares alone
            return math.floor(max_gpus / trainer.gpus + 1e-9)
        shape = max(shapes, key=lambda n: n["GPU"])
        whole = math.floor(max_gpus / shape["GPU"] + 1e-9)
        rest = max_gpus - whole * shape["GPU"]
        nodes = [shape] * whole + ([{**shape, "GPU": rest}] if rest > 1e-9 else [])
    return sum(trainers_per_node(n, trainer, trial) for n in nodes)
