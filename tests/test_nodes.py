"""Two-node local clusters: workers without data files, and a worker node lost mid-sweep.

The module's tests share one ``ray.cluster_utils.Cluster`` (a head and a worker node),
started once: the session's Ray is stopped first and started again after the module.
Every node process starts in a folder without ``data/``, and the nodes' staged-pool
cache is one folder each test reads. A test that lost the worker node leaves the next
one a fresh worker (``two_nodes`` adds it back), so no test depends on the order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SESSION_RAY
from sweep_driver import hold_builds_until_trainers_run, own_ray_tmpdir, tiny_grid
from test_engine import assert_complete

from mia_ray.data import staged, staging
from mia_ray.grid import Resources
from mia_ray.planner import plan
from mia_ray.specs import AttackSpec, TrainSpec

# Notice a killed node within seconds, not Ray's default half minute.
FAST_HEALTH_CHECK = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                     "health_check_failure_threshold": 3}
# Head: 3 CPUs, what the node-loss test needs there once the worker is gone (one
# trainer, the lost node's trainer restarted, two trials at 0.5 CPU). Worker: 2.
HEAD_CPUS, WORKER_CPUS = 3, 2


class TwoNodes:
    """The module's cluster, its current worker node, and the folders its nodes see."""

    def __init__(self, root):
        from ray.cluster_utils import Cluster

        self.root = root
        self.cache = root / "node-cache"  # the nodes' staged-pool cache (CACHE_ENV)
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": HEAD_CPUS, "_system_config": FAST_HEALTH_CHECK})
        self.worker = None
        self.ensure_worker()

    def ensure_worker(self):
        """A live worker node: the one there is, or a new one if a test removed it."""
        if self.worker is None or self.worker not in self.cluster.worker_nodes:
            self.worker = self.cluster.add_node(num_cpus=WORKER_CPUS)
            self.cluster.wait_for_nodes()
        return self.worker

    @property
    def address(self) -> str:
        return self.cluster.address


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    root = tmp_path_factory.mktemp("two-nodes")
    (root / "nodes").mkdir()
    with pytest.MonkeyPatch.context() as mp, own_ray_tmpdir() as ray_tmp:
        # Set before the nodes start: their worker processes inherit both. The cluster
        # records its address in a Ray temp folder of its own, unseen by other sweeps.
        mp.setenv("RAY_TMPDIR", str(ray_tmp))
        mp.setenv(staged.CACHE_ENV, str(root / "node-cache"))
        mp.chdir(root / "nodes")  # the nodes' processes start here: no data/
        nodes = TwoNodes(root)
        try:
            yield nodes
        finally:
            if ray.is_initialized():
                ray.shutdown()
            nodes.cluster.shutdown()
    if was_up:
        ray.init(**SESSION_RAY)


@pytest.fixture
def two_nodes(cluster):
    """The shared cluster with a live worker node; this test's driver disconnects after."""
    import ray

    cluster.ensure_worker()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()


def connect(nodes: TwoNodes, hold_for: tuple[Path, int] | None = None):
    """Join the cluster as the test's driver; ``hold_for`` (a folder, a trainer count):
    the trainers' first builds wait until that many have joined
    (:func:`sweep_driver.hold_builds_until_trainers_run`)."""
    import ray

    gate, trainers = hold_for or (None, 0)
    ray.init(address=nodes.address, log_to_driver=False,
             runtime_env=hold_builds_until_trainers_run(str(gate), trainers) if gate else None)


def sees_file(path: str) -> dict[str, bool]:
    """Whether a worker process on each node can read ``path`` (relative to its cwd)."""
    import os

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def probe(p):
        return os.path.isfile(p)

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    return dict(zip(nodes, ray.get([
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
        .remote(path) for n in nodes])))


@pytest.mark.slow
def test_two_nodes_train_from_the_staged_copy_not_the_drivers_data_folder(
        two_nodes, tmp_path, monkeypatch):
    """A sweep with a relative --data-root that only the driver can read: both nodes
    train, from the staged copy of the pool in the nodes' cache. A worker that read
    ./data (or a stage that left no copy) fails the sweep or the cache check."""
    import ray

    from mia_ray.engine import run_sweep

    connect(two_nodes, hold_for=(tmp_path / "gate", 2))  # both nodes' trainers build
    driver = tmp_path / "driver"
    (driver / "data").mkdir(parents=True)
    monkeypatch.chdir(driver)
    rng = np.random.default_rng(0)
    np.savez(driver / "data" / "location.npz",
             features=rng.integers(0, 2, size=(160, 446)).astype(np.float32),
             labels=rng.integers(0, 30, size=160))
    # A relative --data-root: the driver reads ./data, no worker process can.
    visible = sees_file("data/location.npz")
    assert len(visible) == 2 and not any(visible.values())
    grid = tiny_grid(datasets=("location",), archs=("fc",), methods=("l1_unstructured",),
                     knowledge=("original", "full"), strengths=(4.0,), data_root="data",
                     attacks=AttackSpec(names=("conf", "gap"), epochs=1),
                     train=TrainSpec(max_epochs=2), finetune=TrainSpec(max_epochs=1),
                     num_trainers=2, stack_models=1)
    storage = tmp_path / "storage"
    outcome = run_sweep(grid, str(storage), progress=False)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert outcome.errors == []
    assert_complete(storage, grid)
    assert {e["node_id"] for e in outcome.events if e["trained"]} == nodes
    # Trials go wherever Ray places them (all on one node is a valid schedule); any that
    # ran on the worker read the staged copy too, since no node can see ./data.
    assert {t["node_id"] for t in outcome.trial_results} <= nodes
    (key,) = [p.name for p in (storage / "artifacts" / "pools").iterdir() if p.name != "index"]
    assert key.startswith("location-")
    assert sorted(p.name for p in (two_nodes.cache / key).iterdir()) == ["x.npy", "y.npy"]


@pytest.mark.slow
def test_an_audit_on_two_nodes_needs_its_files_only_until_they_are_staged(
        two_nodes, tmp_path, monkeypatch):
    """``python -m mia_ray.audit --address`` on a two-node cluster, with the data, member
    and model files deleted from the driver the moment staging returns: from then on no
    process on any node can read them, so every trainer and trial (and the driver's
    own summary) works from the storage's staged pool and the member indices its specs
    carry."""
    import ray
    from sklearn.datasets import load_digits

    import mia_ray.engine.sweep as sweep
    from mia_ray.audit.cli import main
    from mia_ray.audit.demo import train_overfit
    from mia_ray.resolution import resolve_dataset

    # No driver is connected: the audit joins the cluster itself, through --address.
    driver = tmp_path / "driver"
    driver.mkdir()
    monkeypatch.chdir(driver)
    x, y = load_digits(return_X_y=True)
    np.savez("glyphs.npz", labels=y[:500],
             features=(x[:500].reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8))
    members = np.sort(np.random.default_rng(0).choice(500, 150, replace=False))
    np.save("members.npy", members)
    train_overfit(resolve_dataset("glyphs.npz"), members, "model.pt", epochs=5)
    files = ("glyphs.npz", "members.npy", "model.pt")

    real_stage, real_run = staging.stage_pools, sweep.run_sweep
    seen: dict = {}

    def stage_then_delete(datasets, store_root):
        keys = real_stage(datasets, store_root)
        for name in files:
            (driver / name).unlink()
        return keys

    def run_and_record(*args, **kwargs):
        seen["outcome"] = real_run(*args, **kwargs)
        seen["nodes"] = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        return seen["outcome"]

    monkeypatch.setattr(staging, "stage_pools", stage_then_delete)
    monkeypatch.setattr(sweep, "run_sweep", run_and_record)
    try:
        code = main(["--model", "model.pt", "--data", "glyphs.npz", "--members", "members.npy",
                     "--storage", str(tmp_path / "storage"), "--address", two_nodes.address,
                     "--methods", "l1_unstructured", "--sparsities", "0.5", "--shadows", "1",
                     "--epochs", "3", "--finetune-epochs", "1", "--attacks", "conf,mentr"])
    finally:
        ray.shutdown()
    assert code == 0
    assert not any((driver / name).exists() for name in files)  # deleted, yet it ran
    outcome = seen["outcome"]
    assert outcome.errors == [] and len(seen["nodes"]) == 2
    trained = [e for e in outcome.events if e["trained"]]
    # the shadow, the pruned variant and its pruned shadow (the audited model is imported),
    # and the two attack fits
    assert sorted(e["kind"] for e in trained) == ["attack_fit"] * 2 + ["model"] * 3
    assert {e["node_id"] for e in trained} <= seen["nodes"]
    storage = tmp_path / "storage"
    assert set(pd.read_parquet(storage / "attacks").dataset) == {"glyphs"}
    summary = pd.read_parquet(storage / "audit.parquet")
    assert sorted(summary.method) == ["l1_unstructured", "none"]
    assert summary.delta_auc.notna().all() and (summary.n_audited == 150).all()
    # The member set travelled inside the specs the engine sent (read once, when the
    # audit resolved its inputs), so the storage needs no copy of the member file.
    assert not (storage / "artifacts" / "members").exists()


@pytest.mark.slow
def test_losing_a_worker_node_mid_sweep_loses_and_duplicates_nothing(two_nodes, tmp_path):
    """The worker node is killed once it has built a model and more builds are to come:
    the sweep still ends with every cell and every model exactly once, the later builds
    on the head. A driver that lost the queue, or wrote a rebuilt model twice, fails.
    Last in the module: it removes the worker (a later test would get a new one)."""
    import ray

    from mia_ray.engine import run_sweep
    from mia_ray.engine.sweep import COORDINATOR_NAME

    connect(two_nodes, hold_for=(tmp_path / "gate", 2))  # the worker's trainer builds too
    cluster, worker = two_nodes.cluster, two_nodes.worker
    head_id = ray.get_runtime_context().get_node_id()
    grid = tiny_grid(archs=("fc",), methods=("l1_unstructured",),
                     attacks=AttackSpec(names=("conf", "gap"), epochs=1),
                     trainer=Resources(cpus=1.0), num_trainers=2, stack_models=1)
    storage = tmp_path / "storage"
    box: dict = {}
    sweep = threading.Thread(target=lambda: box.update(outcome=run_sweep(
        grid, str(storage), progress=False, max_concurrent_trials=2)))
    try:
        sweep.start()
        removed_at = None
        while removed_at is None and sweep.is_alive():
            try:
                coordinator = ray.get_actor(COORDINATOR_NAME)
                events = ray.get(coordinator.get_events.remote())
            except ValueError:  # not created yet
                events = []
            # The event: the worker node has finished a model build, more are to come.
            done_there = [e for e in events if e["node_id"] == worker.node_id
                          and e["kind"] == "model"]
            if done_there:
                cluster.remove_node(worker, allow_graceful=False)
                # The coordinator's tick at the removal: the sweep must go on past it.
                removed_at = max(max(e["issued"], e["returned"]) for e in events)
            time.sleep(0.05)
        sweep.join(timeout=900)
        # The sweep may finish before the control plane has declared the killed node
        # dead; wait for that state (bounded), rather than for an amount of time.
        for _ in range(600):
            alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
            if worker.node_id not in alive:
                break
            time.sleep(0.1)
    finally:
        ray.shutdown()
    assert removed_at is not None, "the sweep finished before the node could be removed"
    assert alive == [head_id]
    outcome = box["outcome"]
    assert outcome.errors == []
    assert_complete(storage, grid)  # every cell once, every attack once
    models = pd.read_parquet(storage / "models")
    assert models["model_key"].is_unique
    assert set(models["model_key"]) == {s.key() for s in plan(grid).models}
    # The loss came mid-sweep: builds went on returning after it, on the head. Ordered
    # by the coordinator's ticks, not clocks. Which trainer took them (the restarted
    # one or the head's own) is the scheduler's choice, so it is not asserted.
    later = [e for e in outcome.events if e["returned"] > removed_at]
    assert later and head_id in {e["node_id"] for e in later}
