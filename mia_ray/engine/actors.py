"""Trainer actors and the coordinator that hands them builds, each build once.

Trainers hold a fraction of a GPU (``num_gpus`` from the grid, e.g. 0.25 to pack four
on one GPU) and explicit ``num_cpus``; they fall back to the CPU when CUDA is absent.
The coordinator is an async actor with no resources of its own: it keeps one future
per build key, so two trials asking for the same model share one training run, and it
builds a pruned model's parent first. It knows the plan's cohorts (the victim and the
shadows that share an architecture, schedule, pruning and defense): the first request
for any model of a cohort starts one job that trains the whole cohort together
(:func:`pipeline.ensure_models`), and every later request for one of them joins it.
Attack fits whose shadow models are built wait in a queue; a trainer that comes free
takes up to ``stack_attacks`` of them as one job (:func:`pipeline.ensure_attack_fits`),
their learned networks trained stacked.

The pool may be larger than the cluster of the moment (sized for what an autoscaler
can add, :mod:`mia_ray.engine.capacity`): a trainer takes work only once it runs, so
the trainers still waiting for a node never hold a build.

Faults: trainers restart when killed and Ray retries the interrupted call on the new
process (``max_restarts``/``max_task_retries``). A build is idempotent (the pipeline's steps
check the store first and write atomically), so a retry can never duplicate a result.
When a node is lost, its trainers restart on the nodes that remain; the coordinator is
placed on the driver's node (``sweep.run_sweep``), so the build queue survives it. A
killed coordinator restarts too (its trainers, which it owns, die with it and are made
anew), and Ray retries the trials' pending calls on the new process: the builds then in
flight run again, finding in the store whatever was finished.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import ray

from mia_ray.knowledge import AttackFitSpec
from mia_ray.pipeline import ATTACK_FITS, MODELS, ensure_attack_fits, ensure_models
from mia_ray.predict import pick_device
from mia_ray.results import ResultTables
from mia_ray.specs import ModelSpec
from mia_ray.store import ArtifactStore

TRAINER_RESTARTS = 4


class Trainer:
    """Builds models and attack fits in one worker process. Wrapped by ray.remote."""

    def __init__(self, store_root: str, results_root: str, threads: int = 1,
                 stack_within_fit: bool = True, rewind_epochs: tuple[int, ...] = ()):
        import torch

        # Ray sets OMP_NUM_THREADS from num_cpus; match torch's pool to the CPUs we hold.
        torch.set_num_threads(max(1, threads))
        self.store = ArtifactStore(store_root)
        self.results = ResultTables(results_root)
        self.device = pick_device()
        # One fit's MLP attacks train stacked too, unless stacking is off (stack_attacks=1).
        self.stack_within_fit = stack_within_fit
        # Extra epochs whose weights the originals keep for the grid's imp rounds
        # (a non-default --rewind-epoch); an original is built before its imp rounds ask.
        self.rewind_epochs = tuple(rewind_epochs)

    def _event(self, kind: str, key: str, trained: bool, start: float) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"kind": kind, "key": key, "trained": trained, "start": start,
                "end": time.time(), "node_id": ctx.get_node_id(), "pid": os.getpid(),
                "actor_id": ctx.get_actor_id(), "device": str(self.device),
                "gpu_ids": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]}

    def build_models(self, specs: list[ModelSpec]) -> list[dict[str, Any]]:
        """Build a cohort's models as one job; one event per model, in order."""
        start = time.time()
        trained = [not self.store.has(MODELS, s.key()) for s in specs]
        together = sum(trained)
        ensure_models(specs, self.store, self.results, device=self.device,
                      stack_limit=max(1, len(specs)), rewind_epochs=self.rewind_epochs)
        end = time.time()  # one job: its models share start and end
        return [{**self._event("model", s.key(), t, start), "end": end,
                 "together": together if t else 0} for s, t in zip(specs, trained)]

    def fit_attacks(self, fits: list[AttackFitSpec]) -> list[dict[str, Any]]:
        """Fit attack sets as one job (stacked when more than one); one event per fit."""
        start = time.time()
        trained = [not self.store.has(ATTACK_FITS, f.key()) for f in fits]
        ensure_attack_fits(fits, self.store, device=self.device, stack=len(fits) > 1
                           or self.stack_within_fit)
        end = time.time()
        return [{**self._event("attack_fit", f.key(), t, start), "end": end,
                 "together": sum(trained) if t else 0} for f, t in zip(fits, trained)]

    def ping(self) -> dict[str, Any]:
        return self._event("ping", "", False, time.time())


class Coordinator:
    """Deduplicates builds across trials and queues them on a pool of trainers."""

    def __init__(self, store_root: str, results_root: str, num_trainers: int,
                 trainer_options: dict[str, Any], planned: dict[str, list[str]],
                 cohorts: list[list[ModelSpec]] | None = None, stack_attacks: int = 1,
                 rewind_epochs: tuple[int, ...] = ()):
        """``planned``: the plan's model keys (``"model"``) and attack-fit keys
        (``"attack_fit"``), for the progress counts."""
        threads = max(1, int(trainer_options.get("num_cpus", 1)))
        remote_trainer = ray.remote(Trainer).options(
            max_restarts=TRAINER_RESTARTS, max_task_retries=TRAINER_RESTARTS,
            **trainer_options)
        # Every spec a trainer gets reads its pool from the storage (DatasetSpec.staged).
        self.trainers = [remote_trainer.remote(store_root, results_root, threads,
                                               stack_attacks > 1, rewind_epochs)
                         for _ in range(num_trainers)]
        self.stack_attacks = stack_attacks
        # Fits whose shadows are built, waiting for a trainer: (fit, its result future).
        self.ready_fits: list[tuple[AttackFitSpec, asyncio.Future]] = []
        # Trainers join the queue of idle ones when they are running (see _open_pool).
        self.idle: asyncio.Queue = asyncio.Queue()
        self.joining: list[asyncio.Future] | None = None
        # model key -> the cohort it trains with (a model outside the plan trains alone).
        self.cohort_of: dict[str, list[ModelSpec]] = {
            s.key(): cohort for cohort in (cohorts or []) for s in cohort}
        self.futures: dict[str, asyncio.Future] = {}
        self.events: list[dict[str, Any]] = []
        # A logical clock: it ticks when a trainer call is issued and when one returns,
        # so the events say which calls overlapped without comparing wall clocks.
        self.clock = itertools.count(1)
        self.totals = {kind: len(keys) for kind, keys in planned.items()}
        # Builds in the store when this process starts count as done (after a restart,
        # those built before it too); new ones count as they finish.
        store = ArtifactStore(store_root)
        self.done = {kind: sum(store.has(table, key) for key in planned.get(kind, []))
                     for kind, table in (("model", MODELS), ("attack_fit", ATTACK_FITS))}

    def _open_pool(self) -> None:
        """Let each trainer join the idle queue once it runs, not when it is created.

        A pool sized for the cluster's maximum holds trainers that wait for nodes the
        autoscaler has yet to add, or never will; work handed to one of those would
        wait with it while running trainers sit idle. Called from the first request,
        in the actor's event loop.
        """
        if self.joining is None:
            self.joining = [asyncio.ensure_future(self._join(t)) for t in self.trainers]

    async def _join(self, trainer: Any) -> None:
        try:
            await trainer.ping.remote()
        except ray.exceptions.RayActorError:
            return  # it died before it ever ran: the others do its share
        self.idle.put_nowait(trainer)

    async def ensure_model(self, spec: ModelSpec) -> dict[str, Any]:
        self._open_pool()
        key = f"model:{spec.key()}"
        if key not in self.futures:
            # Start the job for every model of the cohort not already started.
            cohort = [s for s in self.cohort_of.get(spec.key(), [spec])
                     if f"model:{s.key()}" not in self.futures]
            job = asyncio.ensure_future(self._build_cohort(cohort))
            for s in cohort:
                self.futures[f"model:{s.key()}"] = job
        events = await self._await(key)
        return events[spec.key()]

    async def ensure_attacks(self, fit: AttackFitSpec) -> dict[str, Any]:
        self._open_pool()
        key = f"fit:{fit.key()}"
        if key not in self.futures:
            self.futures[key] = asyncio.ensure_future(self._fit(fit))
        return await self._await(key)

    async def _await(self, key: str) -> Any:
        future = self.futures[key]
        try:
            # shield: one caller's cancellation must not cancel the shared build.
            return await asyncio.shield(future)
        except Exception:
            # Forget a failed job (under every key it serves) so a retry starts afresh.
            for k in [k for k, f in self.futures.items() if f is future]:
                del self.futures[k]
            raise

    async def _build_cohort(self, specs: list[ModelSpec]) -> dict[str, dict[str, Any]]:
        parents = {s.parent().key(): s.parent() for s in specs if s.prune is not None}
        await asyncio.gather(*(self.ensure_model(p) for p in parents.values()))
        events = await self._run("build_models", specs)
        return {e["key"]: e for e in events}

    async def _fit(self, fit: AttackFitSpec) -> dict[str, Any]:
        await asyncio.gather(*(self.ensure_model(s) for s in fit.shadows))
        entry = (fit, asyncio.get_running_loop().create_future())
        self.ready_fits.append(entry)
        trainer = await self.idle.get()
        if entry not in self.ready_fits:  # a job that started meanwhile took this fit
            self.idle.put_nowait(trainer)
            return await entry[1]
        # This fit and the oldest others that are ready, up to the job size.
        job = [entry] + [e for e in self.ready_fits if e is not entry][:self.stack_attacks - 1]
        for e in job:
            self.ready_fits.remove(e)
        try:
            events = await self._run("fit_attacks", [f for f, _ in job], trainer=trainer)
        except Exception as exc:
            for _, future in job:
                future.set_exception(exc)
        else:
            by_key = {e["key"]: e for e in events}
            for f, future in job:
                future.set_result(by_key[f.key()])
        return await entry[1]

    async def _run(self, method: str, spec: Any, trainer: Any = None) -> list[dict[str, Any]]:
        if trainer is None:
            trainer = await self.idle.get()
        issued = next(self.clock)
        try:
            result = await getattr(trainer, method).remote(spec)
        finally:
            self.idle.put_nowait(trainer)
        returned = next(self.clock)
        events = result if isinstance(result, list) else [result]
        for event in events:
            event.update(issued=issued, returned=returned)
            self.events.append(event)
            if event["trained"]:
                self.done[event["kind"]] += 1
        return events

    def stats(self) -> dict[str, Any]:
        return {"models_done": self.done["model"], "models_total": self.totals["model"],
                "fits_done": self.done["attack_fit"],
                "fits_total": self.totals["attack_fit"],
                "in_flight": sum(not f.done() for f in self.futures.values())}

    def get_events(self) -> list[dict[str, Any]]:
        return list(self.events)

    def trainer_handles(self) -> list[Any]:
        return list(self.trainers)
