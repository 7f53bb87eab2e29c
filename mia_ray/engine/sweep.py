"""Run a grid on Ray: Tune trials for cells, trainer actors for builds.

One Tune trial per attack cell (``tune.grid_search`` over cell keys). A trial asks the
coordinator for the victim, its reference models (if any) and for the attack fit of
its shadows, waits holding no CPU, then runs the attacks on the victim in a task that
holds the trial's resources and writes the cell's Parquet files (docs/cluster.md,
"Trials and trainers"). The builds happen in
the trainer actors, outside the trials' placement groups, each exactly once; the
models of one cohort (up to ``grid.stack_models``) train together as one job, and attack
fits that are ready at once (up to ``grid.stack_attacks``) fit as one stacked job.

Data travels through the storage: before any work the driver stages each dataset's
pool there (:mod:`mia_ray.data.staging`) and every trial and trainer loads it from
that copy, so a worker node needs no dataset files of its own.

Resume is the default: cells whose results exist are not scheduled again, and builds
whose artifacts exist are loaded, not retrained. Rerunning the same command after a
killed driver finishes the rest.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mia_ray.data import staging
from mia_ray.engine import MAX_FAILURES, capacity
from mia_ray.engine.actors import Coordinator
from mia_ray.engine.address import check_address
from mia_ray.engine.cluster import connect
from mia_ray.engine.progress import ProgressLine
from mia_ray.evaluation import evaluate_cell
from mia_ray.grid import GridSpec
from mia_ray.knowledge import CellSpec
from mia_ray.planner import Plan, cohorts, plan
from mia_ray.results import ResultTables
from mia_ray.store import ArtifactStore, check_writable

COORDINATOR_NAME = "mia-coordinator"
WAITING_TRIAL = {"cpu": 0, "gpu": 0, "memory": capacity.TRIAL_MEMORY}
"""What a Tune trial holds for its whole life: memory for its process, no CPU or GPU.
It spends that life waiting on builds; a trial holding a CPU there could, with others,
take every CPU the trainers need (docs/cluster.md, "Trials and trainers")."""
SCORING_RETRIES = 3
"""Retries of a scoring task whose worker died (a lost node); scoring is idempotent."""
COORDINATOR_RESTARTS = 3
"""Restarts of a killed coordinator (e.g. by Ray's memory monitor); each reruns only
the builds then in flight, which find in the store what was finished."""


def layout(storage: str) -> tuple[str, str]:
    """(artifact store root, results root) under one storage root."""
    base = storage.rstrip("/")
    return f"{base}/artifacts", base


@dataclass
class SweepResult:
    plan: Plan
    storage: str
    events: list[dict[str, Any]] = field(default_factory=list)
    """The coordinator's trainer calls, since its last start (a restart forgets earlier
    ones; the tables and the store keep every result)."""
    trial_results: list[dict[str, Any]] = field(default_factory=list)
    cells_cached: int = 0
    trainers: int = 0
    """Trainer actors the pool started with, and where that number came from."""
    trainer_pool: str = ""
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def trained(self, kind: str = "model") -> list[str]:
        """Keys this run actually trained (not found in the store)."""
        return [e["key"] for e in self.events if e["kind"] == kind and e["trained"]]


def validate(grid: GridSpec, storage: str) -> None:
    """Everything that can fail before Ray starts: data files (or a staged copy of them
    in the storage) and the storage itself. ``--download`` downloads here, once."""
    store_root, _ = layout(storage)
    for name in grid.datasets:
        staging.check_source(grid.dataset_spec(name, grid.seeds[0]), store_root)
    check_writable(storage)


def _score_cell(cell: CellSpec, storage: str) -> float:
    """Score one cell whose builds are done and write its result files (a Ray task that
    holds the grid's ``trial`` resources while it runs); the best attack's accuracy.
    The cell's specs carry where its pool is staged (:func:`staging.located`)."""
    import torch

    torch.set_num_threads(1)  # scoring is light; the trainers get the cores
    store_root, results_root = layout(storage)
    rows = evaluate_cell(cell, ArtifactStore(store_root), ResultTables(results_root))
    return max(r["accuracy"] for r in rows)


_SCORE_CELL = ray.remote(_score_cell)


def _cell_trial(config: dict[str, Any], *, cells: dict[str, CellSpec], storage: str,
                coordinator: Any, scoring: dict[str, Any]) -> None:
    """One cell: wait on its builds holding no CPU or GPU (:data:`WAITING_TRIAL`), then
    score it in a task that holds the trial's resources (``scoring``) only while it runs.
    Nothing that holds a CPU waits on a build, so trials can never starve the trainers."""
    cell = cells[config["cell"]]
    _, results_root = layout(storage)
    node = ray.get_runtime_context().get_node_id()
    if not ResultTables(results_root).cell_done(cell.key()):
        ray.get([coordinator.ensure_model.remote(cell.victim()),
                 *(coordinator.ensure_model.remote(r) for r in cell.references()),
                 coordinator.ensure_attacks.remote(cell.attack_fit())])
        best = ray.get(_SCORE_CELL.options(**scoring).remote(cell, storage))
    else:  # finished by an earlier attempt of this trial
        best = float("nan")
    tune.report({"cell_key": cell.key(), "node_id": node, "best_accuracy": best})


def default_trainers(grid: GridSpec, *, joined: bool, jobs: int) -> tuple[int, str]:
    """(trainers, where their number comes from): ``--trainers``, else enough to fill
    the cluster the sweep can grow to (:mod:`mia_ray.engine.capacity`), but no more
    than the ``jobs`` that could ever run at once. ``joined``: the sweep joined a
    running cluster, whose head may carry the autoscaler's config."""
    if grid.num_trainers:
        return grid.num_trainers, "--trainers"
    config = capacity.autoscaler_config() if joined else None
    if config is not None:
        nodes = capacity.reachable_nodes(config)
        source = f"the nodes the autoscaler can reach ({capacity.AUTOSCALER_CONFIG})"
    else:
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        source = "the nodes present"
    if grid.max_gpus:
        source = f"--max-gpus {grid.max_gpus:g}, in nodes shaped like {source}"
    size = capacity.pool_size(nodes, grid.trainer, grid.trial, grid.max_gpus)
    return max(1, min(size, jobs)), source


def run_sweep(grid: GridSpec, storage: str, *, address: str | None = None,
              local: bool = False, num_cpus: int | None = None, num_gpus: int | None = None,
              max_concurrent_trials: int | None = None, max_failures: int = MAX_FAILURES,
              progress: bool = True) -> SweepResult:
    """Plan, validate, then run every cell not yet done. Returns what happened.

    The cluster: ``address``, else the one running on this node, else a local one sized
    by ``num_cpus``/``num_gpus`` (``local``: always a local one), as
    :func:`mia_ray.engine.cluster.connect` decides."""
    check_address(address, local=local)
    if "://" not in storage:
        # Tune runs each trial in its own working folder: a relative root would move.
        storage = os.path.abspath(storage)
    validate(grid, storage)
    the_plan = plan(grid)
    store_root, results_root = layout(storage)
    results = ResultTables(results_root)
    todo = [c for c in the_plan.cells if not results.cell_done(c.key())]
    outcome = SweepResult(plan=the_plan, storage=storage,
                          cells_cached=len(the_plan.cells) - len(todo))
    if not todo:
        return outcome
    start = time.perf_counter()
    # Before any work: every pool into the storage, where every node reads it.
    pools = staging.stage_pools({c.dataset.pool_id: c.dataset for c in todo}.values(),
                                store_root)
    # The trials and trainers read each pool from the storage: every cell and model
    # spec they are sent carries its pool's staged location (no process-wide setting).
    todo = staging.located(todo, store_root, pools)
    connection = connect(address=address, local=local, num_cpus=num_cpus, num_gpus=num_gpus)
    if progress:
        print(connection.line(), flush=True)
    planned = {"model": [s.key() for s in the_plan.models],
               "attack_fit": [f.key() for f in the_plan.attack_fits]}
    trainer_options = {"num_cpus": grid.trainer.cpus, "num_gpus": grid.trainer.gpus,
                       "scheduling_strategy": "SPREAD"}
    jobs = [staging.located(job, store_root, pools)
            for job in cohorts(the_plan.models, limit=grid.stack_models)]
    outcome.trainers, outcome.trainer_pool = default_trainers(
        grid, joined=connection.joined, jobs=len(jobs) + len(the_plan.attack_fits))
    if progress:
        print(f"trainer pool: {outcome.trainers} trainers, sized for "
              f"{outcome.trainer_pool}", flush=True)
    # The coordinator lives beside the driver: losing a worker node must not lose the
    # queue of builds (trainers restart elsewhere, Tune retries the trials).
    coordinator = ray.remote(Coordinator).options(
        name=COORDINATOR_NAME, num_cpus=0, max_concurrency=10_000,
        max_restarts=COORDINATOR_RESTARTS, max_task_retries=COORDINATOR_RESTARTS,
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote(
        store_root, results_root, outcome.trainers, trainer_options, planned, jobs,
        grid.stack_attacks, (grid.rewind_epoch,) if grid.rewind_epoch else ())
    try:
        ray.get(coordinator.stats.remote())  # fail here, not in every trial, if it cannot start
        # "DEFAULT": the scoring task is placed on the cluster, not in the trial's
        # placement group, which holds memory only.
        scoring = {"num_cpus": grid.trial.cpus, "num_gpus": grid.trial.gpus,
                   "scheduling_strategy": "DEFAULT",
                   "max_retries": SCORING_RETRIES}
        trainable = tune.with_resources(
            tune.with_parameters(_cell_trial, cells={c.key(): c for c in todo},
                                 storage=storage, coordinator=coordinator,
                                 scoring=scoring), WAITING_TRIAL)
        callbacks = [ProgressLine(coordinator, total_cells=len(the_plan.cells),
                                  cached_cells=outcome.cells_cached)] if progress else []
        tuner = tune.Tuner(
            trainable,
            param_space={"cell": tune.grid_search([c.key() for c in todo])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent_trials or capacity.concurrent_trials(
                    outcome.trainers),
                reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"mia-sweep-{grid.key()}-{int(time.time())}",
                storage_path=_tune_storage(storage),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=0, callbacks=callbacks),
        )
        grid_results = tuner.fit()
        outcome.trial_results = [dict(r.metrics or {}) for r in grid_results]
        outcome.errors = [str(r.error) for r in grid_results if r.error is not None]
        outcome.events = ray.get(coordinator.get_events.remote())
    finally:
        # The coordinator's name must be free for the next sweep on this cluster.
        for t in ray.get(coordinator.trainer_handles.remote()):
            ray.kill(t)
        ray.kill(coordinator)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _tune_storage(storage: str) -> str:
    """Tune's own bookkeeping lives beside the results, in a folder readers skip."""
    if "://" in storage:
        return storage.rstrip("/") + "/_tune"
    return os.path.abspath(os.path.join(storage, "_tune"))
