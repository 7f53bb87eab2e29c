"""The Ray engine on a real (small) Ray: dedup, fractional GPUs, faults, resume, nodes.

No test here reads a clock: overlap comes from the coordinator's logical clock (a tick
per trainer call issued and returned), faults are injected at a fixed point in the
order of events, and a sweep that hangs is caught by pytest's own timeout, not ours.

These tests prove plumbing (where work runs, that it runs once, that it survives a
fault), not what an attack finds: their grids are the fewest cells, models and
trainer calls that exercise what they assert, attacked by threshold attacks. Most of
a test's time is Ray's processes starting, not training (a digits model trains in
well under a second), so cells and calls are what is cut.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_driver import own_ray_tmpdir, tiny_grid

from mia_ray.planner import cohorts, plan
from mia_ray.results import METRIC_COLUMNS
from mia_ray.specs import AttackSpec, TrainSpec

THRESHOLD_ATTACKS = AttackSpec(names=("conf", "gap"), epochs=1)
"""Attacks that still need an attack fit (their thresholds, from the shadows), without a
learned attack's network: what the engine tests assert holds for either."""

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """Import sweeps/<name>.py as a module, so its main() runs in this process."""
    spec = importlib.util.spec_from_file_location(f"sweeps_{name}", ROOT / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(storage: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(storage / table)


def assert_complete(storage: Path, grid) -> pd.DataFrame:
    """Exactly one row per (cell, attack), every planned cell, no null metrics."""
    attacks = read(storage, "attacks")
    cells = {c.key() for c in plan(grid).cells}
    assert set(attacks["cell_key"]) == cells
    assert not attacks.duplicated(["cell_key", "attack"]).any()
    assert len(attacks) == len(cells) * len(grid.attacks.names)
    assert not attacks[METRIC_COLUMNS["attacks"]].isna().any().any()
    return attacks


def pruned_pair(**changes):
    """Two cells: the original model and one method's undefended pruned model with full
    knowledge, K = 1, threshold attacks. The pruned cell needs the original cell's
    models too, so the naive per-cell plan trains more models than the engine must."""
    base = dict(methods=("l1_unstructured",), knowledge=("original", "full"),
                strengths=(0.0,), num_shadows=1, attacks=THRESHOLD_ATTACKS)
    return tiny_grid(**{**base, **changes})


def max_overlap(events: list[dict]) -> int:
    """Most trainer calls in flight at once, from the coordinator's logical clock.

    A call is in flight from the tick it was issued to the tick it returned; the models
    of one stacked job share one call, so they count once.
    """
    calls = {(e["issued"], e["returned"]) for e in events}
    ticks = sorted([(issued, 1) for issued, _ in calls] + [(ret, -1) for _, ret in calls])
    running = peak = 0
    for _, step in ticks:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.slow
def test_each_model_trained_once_on_quarter_gpus(ray_session, tmp_path):
    """Proves: deduplication (each model and attack fit trained once though two cells
    need the originals), and fractional GPUs (four trainers share GPU 0, all busy at
    once). Four trainers at 0.25 of the (fake) GPU: all four fit on it at once. Models
    train one per call here: K = 3 makes the originals four calls, issued together,
    and each original releases two pruned children (two sparsities) when it is built,
    12 calls in all: work queued deep enough that all four trainers run at once
    however late the last of them starts (each joins the pool once its process runs)."""
    from mia_ray.engine import run_sweep
    from mia_ray.grid import Resources

    grid = pruned_pair(num_shadows=3, sparsities=(0.5, 0.7),
                       trainer=Resources(gpus=0.25, cpus=0.5), num_trainers=4, stack_models=1)
    the_plan = plan(grid)
    outcome = run_sweep(grid, str(tmp_path), progress=False)
    assert outcome.errors == []
    trained = outcome.trained("model")
    assert sorted(trained) == sorted(s.key() for s in the_plan.models)  # each exactly once
    assert the_plan.naive_models > len(trained)
    assert sorted(outcome.trained("attack_fit")) == sorted(f.key() for f in the_plan.attack_fits)
    assert_complete(tmp_path, grid)
    models = read(tmp_path, "models")
    assert len(models) == len(the_plan.models) and models["model_key"].is_unique

    builds = [e for e in outcome.events if e["trained"]]
    assert len({e["actor_id"] for e in builds}) == 4
    assert all(e["gpu_ids"] == ["0"] for e in builds)  # Ray gave each a share of GPU 0
    assert all(e["device"] == "cpu" for e in builds)  # ... and the code fell back to the CPU
    # Each trainer holds its quarter for life; four calls in flight at once means the
    # four quarters of GPU 0 worked side by side.
    assert max_overlap(builds) == 4
    assert set(models["trained_together"]) == {1}


@pytest.mark.slow
def test_a_stage_trains_as_one_stacked_job(ray_session, tmp_path):
    import torch

    from mia_ray.engine import run_sweep
    from mia_ray.pipeline import train_model
    from mia_ray.store import ArtifactStore

    # Proves: a cohort trains as one stacked job and each model equals the one trained
    # alone (its sizes and epochs kept: that equality is a result); the attacks are
    # threshold ones, as no assertion reads them.
    grid = tiny_grid(methods=("l1_unstructured",), knowledge=("full",), strengths=(4.0,),
                     num_trainers=2, attacks=THRESHOLD_ATTACKS)
    the_plan = plan(grid)
    outcome = run_sweep(grid, str(tmp_path), progress=False)
    assert outcome.errors == []
    assert_complete(tmp_path, grid)
    # Two cohorts (the originals, the PPB-pruned models), each its victim and K shadows.
    jobs = cohorts(the_plan.models, limit=grid.stack_models)
    assert [len(job) for job in jobs] == [grid.num_shadows + 1] * 2
    builds = [e for e in outcome.events if e["kind"] == "model" and e["trained"]]
    assert sorted(e["key"] for e in builds) == sorted(s.key() for s in the_plan.models)
    assert len({e["issued"] for e in builds}) == 2  # two trainer calls
    models = read(tmp_path, "models")
    assert set(models["trained_together"]) == {grid.num_shadows + 1}
    # Each stacked model is the model training.fit gives alone, up to float rounding:
    # retrain the victims one by one and compare what the rows measured.
    store = ArtifactStore(str(tmp_path / "artifacts"))
    rows = models.set_index("model_key")
    for spec in (s for s in the_plan.models if s.role == "victim"):
        parent = store.state_dict("models", spec.parent().key()) if spec.prune else None
        _, alone = train_model(spec, parent, device=torch.device("cpu"))
        stacked = rows.loc[spec.key()]
        assert alone["trained_together"] == 1
        assert alone["epochs"] == stacked["epochs"]
        for column in ("train_acc", "test_acc", "measured_sparsity"):
            assert abs(alone[column] - stacked[column]) <= 0.01, column


@pytest.mark.slow
def test_a_killed_trainer_costs_a_retry_not_a_result(ray_session, tmp_path):
    """A trainer killed with a build in flight restarts; Ray reruns the call there.

    The kill is sent right after the call, before the call can have finished, so the
    build's result comes from the restarted process whether the kill found it
    running or still queued: no race against a deadline decides what is tested.
    """
    import ray

    from mia_ray.engine.actors import TRAINER_RESTARTS, Trainer
    from mia_ray.results import ResultTables
    from mia_ray.store import ArtifactStore

    grid = tiny_grid()
    originals = cohorts(plan(grid).models, limit=grid.stack_models)[0]
    assert all(s.prune is None for s in originals) and len(originals) == grid.num_shadows + 1
    # The options the coordinator gives its trainers.
    trainer = ray.remote(Trainer).options(
        max_restarts=TRAINER_RESTARTS, max_task_retries=TRAINER_RESTARTS, num_cpus=1).remote(
        str(tmp_path / "artifacts"), str(tmp_path))
    old_pid = ray.get(trainer.ping.remote())["pid"]
    build = trainer.build_models.remote(originals)
    ray.kill(trainer, no_restart=False)  # as if its process died mid-build
    events = ray.get(build)
    new_pid = ray.get(trainer.ping.remote())["pid"]
    assert new_pid != old_pid
    assert [e["key"] for e in events] == [s.key() for s in originals]
    assert {e["pid"] for e in events} == {new_pid}  # the retry ran on the new process
    store = ArtifactStore(str(tmp_path / "artifacts"))
    assert all(store.has("models", s.key()) for s in originals)
    models = ResultTables(str(tmp_path)).read("models")
    assert sorted(models["model_key"]) == sorted(s.key() for s in originals)  # once each
    ray.kill(trainer, no_restart=True)


def killing_the_coordinator(killed: list[int]):
    """A stand-in for the sweep's progress callback that kills the coordinator (letting
    Ray restart it) once a build is in flight, and appends the in-flight count to
    ``killed``. A thread of the driver watches, so that Tune's loop runs on meanwhile."""
    import threading

    import ray
    from ray import tune

    def watch(coordinator) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            in_flight = ray.get(coordinator.stats.remote())["in_flight"]
            if in_flight:
                ray.kill(coordinator, no_restart=False)  # as if its process died
                killed.append(in_flight)
                return
            time.sleep(0.05)

    class KillsTheCoordinator(tune.Callback):
        def __init__(self, coordinator, **_):
            threading.Thread(target=watch, args=(coordinator,), daemon=True).start()

    return KillsTheCoordinator


@pytest.mark.slow
def test_a_killed_coordinator_costs_a_rerun_not_the_sweep(ray_session, tmp_path,
                                                          monkeypatch):
    """The coordinator holds the build queue; killed with builds in flight, it restarts,
    Ray retries the trials' calls on it, and the sweep ends complete, each model once."""
    import mia_ray.engine.sweep as sweep

    killed: list[int] = []
    monkeypatch.setattr(sweep, "ProgressLine", killing_the_coordinator(killed))
    grid = tiny_grid(archs=("fc",), knowledge=("original",), num_shadows=1,
                     attacks=THRESHOLD_ATTACKS, num_trainers=1)
    outcome = sweep.run_sweep(grid, str(tmp_path), progress=True)
    assert killed and killed[0] >= 1  # the kill found a build in flight
    assert outcome.errors == []
    assert_complete(tmp_path, grid)
    models = read(tmp_path, "models")
    assert models["model_key"].is_unique and len(models) == len(plan(grid).models)


@pytest.mark.slow
def test_builds_go_only_to_trainers_that_run(ray_session, tmp_path):
    """A pool sized for an autoscaler's maximum holds trainers still waiting for a node,
    or waiting forever (a cloud quota). Here the second of two whole-GPU trainers can
    never start (the session has one GPU): the cell's two jobs, the original models
    and their attack fit, must both run on the first."""
    import ray

    from mia_ray.engine.actors import Coordinator

    grid = tiny_grid(knowledge=("original",), num_shadows=1, train=TrainSpec(max_epochs=1),
                     attacks=AttackSpec(names=("conf",), epochs=1))
    the_plan = plan(grid)
    cell = the_plan.cells[0]
    coordinator = ray.remote(Coordinator).options(num_cpus=0, max_concurrency=100).remote(
        str(tmp_path / "artifacts"), str(tmp_path), 2, {"num_cpus": 0.5, "num_gpus": 1.0},
        {"model": [s.key() for s in the_plan.models],
         "attack_fit": [f.key() for f in the_plan.attack_fits]}, cohorts(the_plan.models))
    try:
        # Generous: the work is seconds; a build handed to the waiting trainer never ends.
        ray.get([coordinator.ensure_model.remote(cell.victim()),
                 coordinator.ensure_attacks.remote(cell.attack_fit())], timeout=240)
        events = ray.get(coordinator.get_events.remote())
    finally:
        for trainer in ray.get(coordinator.trainer_handles.remote()):
            ray.kill(trainer)
        ray.kill(coordinator)
    assert sorted(e["kind"] for e in events) == ["attack_fit", "model", "model"]
    assert len({e["actor_id"] for e in events}) == 1


def _snapshot(storage: Path) -> dict[str, int]:
    files = list((storage / "attacks").glob("*.parquet"))
    files += list((storage / "artifacts" / "models").glob("*/meta.json"))
    return {str(p.relative_to(storage)): p.stat().st_mtime_ns for p in files}


def resume_grid():
    """7 cells (the original; for each of two methods, undefended and PPB with full
    knowledge, and PPB with the defense unknown), K = 1, threshold attacks, one
    trainer: enough cells left after the second that a crash there leaves work undone,
    whatever finished beside it."""
    return tiny_grid(num_shadows=1, attacks=THRESHOLD_ATTACKS, num_trainers=1)


DIES_AFTER_TWO_CELLS = """
import sys
sys.path.insert(0, "tests")
import mia_ray.engine.sweep as sweep
from sweep_driver import die_after_cells
from test_engine import resume_grid
sweep.ProgressLine = die_after_cells(2)
sweep.run_sweep(resume_grid(), sys.argv[1], num_cpus=3, progress=True)
"""


@pytest.mark.slow
def test_killed_driver_resumes_without_recomputing(ray_session, tmp_path):
    """Proves: a driver killed mid-sweep (with its Ray) loses nothing finished, and the
    same sweep run again computes only what was not finished, once."""
    from mia_ray.engine import run_sweep

    storage = tmp_path / "sweep"
    # The driver (in its own session) SIGKILLs itself and the Ray it started as Tune
    # reports the second finished cell.
    log = tmp_path / "driver.log"  # a file, not a pipe: no Ray child can hold it open
    with open(log, "wb") as out:
        first = subprocess.run([sys.executable, "-c", DIES_AFTER_TWO_CELLS, str(storage)],
                               cwd=ROOT, start_new_session=True, timeout=600, stdout=out,
                               stderr=subprocess.STDOUT)
    assert first.returncode == -9, log.read_text()[-2000:]
    before = _snapshot(storage)
    done_cells = {Path(k).stem for k in before if k.startswith("attacks")}
    done_models = {Path(k).parent.name for k in before if k.startswith("artifacts")}
    grid = resume_grid()
    assert 2 <= len(done_cells) < len(plan(grid).cells)

    # The same sweep again (here on the test session's Ray, a new driver all the same).
    outcome = run_sweep(grid, str(storage), progress=False)
    rerun = {"events": outcome.events, "trials": outcome.trial_results}
    assert outcome.errors == [] and outcome.cells_cached == len(done_cells)
    assert_complete(storage, grid)
    after = _snapshot(storage)
    assert {k: after[k] for k in before} == before  # nothing finished was rewritten
    retrained = {e["key"] for e in rerun["events"] if e["kind"] == "model" and e["trained"]}
    assert not retrained & done_models
    assert not {t["cell_key"] for t in rerun["trials"]} & done_cells
    models = read(storage, "models")
    assert models["model_key"].is_unique and len(models) == len(plan(grid).models)


def two_node_grid():
    """1.5 CPUs per trainer on 2-CPU nodes: each node holds one trainer and, in the half
    CPU left, one trial (0.5), whatever Ray's placement prefers. The tiny grid's 7
    cells, K = 1, threshold attacks: ten jobs (five cohorts, five attack fits), four
    cohorts and a fit released at once when the originals are built. Fewer (two cells,
    four jobs) is too few: a trainer joins the pool only once its process runs, and
    under load the first trainer finished every job before the second node's joined."""
    from mia_ray.grid import Resources

    return tiny_grid(num_shadows=1, attacks=THRESHOLD_ATTACKS, num_trainers=2,
                     trainer=Resources(cpus=1.5), trial=Resources(cpus=0.5))


MULTINODE = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
sys.path.insert(0, "tests")
from sweep_driver import hold_builds_until_trainers_run
import ray
ray.init(address=cluster.address, log_to_driver=False,
         runtime_env=hold_builds_until_trainers_run(sys.argv[3], 2))
from test_engine import two_node_grid
from mia_ray.engine import run_sweep
out = run_sweep(two_node_grid(), sys.argv[1], progress=False)
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
json.dump({"nodes": nodes, "events": out.events, "trials": out.trial_results,
           "errors": out.errors}, open(sys.argv[2], "w"))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_two_nodes_share_one_storage_root(tmp_path):
    """Proves: on two nodes with one storage root, both nodes build, each model once,
    and every cell's rows land in the one root."""
    storage, report, gate = tmp_path / "shared", tmp_path / "multinode.json", tmp_path / "gate"
    with own_ray_tmpdir() as ray_tmp:  # the cluster records its address there, unseen
        subprocess.run([sys.executable, "-c", MULTINODE, str(storage), str(report), str(gate)],
                       cwd=ROOT, check=True, timeout=600, capture_output=True,
                       env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    out = json.loads(report.read_text())
    assert out["errors"] == [] and len(out["nodes"]) == 2
    # Each node holds exactly one of the two trainers, and the second job the
    # coordinator hands out goes to the trainer the first did not take (its idle queue
    # is first in, first out; the hold puts both trainers in it before the first build
    # ends, whichever came up first): builds ran on both nodes, each model once, and every
    # cell's rows are there whichever node built its models.
    builds = [e for e in out["events"] if e["trained"]]
    assert {e["node_id"] for e in builds} == set(out["nodes"])
    assert len({e["actor_id"] for e in builds}) == 2
    models = [e["key"] for e in builds if e["kind"] == "model"]
    assert sorted(models) == sorted(s.key() for s in plan(two_node_grid()).models)
    assert_complete(storage, two_node_grid())


@pytest.mark.parametrize("args, field", [
    (["--methods", "magnitude"], "method='magnitude'"),
    (["--knowledge", ""], "knowledge=()"),
    (["--trainer-gpus", "1.5"], "trainer_gpus=1.5"),
    (["--stack-attacks", "0"], "stack_attacks=0"),
    (["--max-gpus", "-1"], "max_gpus=-1.0"),
    (["--max-gpus", "2"], "max_gpus=2.0 is not allowed: expected 0 (unset) when trainers "
                          "take no GPU"),
    (["--max-gpus", "2", "--trainer-gpus", "0.25", "--trainers", "3"], "max_gpus=2.0"),
    (["--storage", "nosuchscheme://bucket/x"], "storage="),
    (["--datasets", "cifar10", "--data-root", "/nonexistent"], "cifar-10-batches-bin"),
])
def test_bad_grid_fails_before_ray_starts(args, field, monkeypatch, capsys):
    import mia_ray.engine.sweep as sweep

    def no_ray(**_):
        raise AssertionError("Ray was started for a bad grid")

    monkeypatch.setattr(sweep, "connect", no_ray)
    assert load_script("small_grid").main(args) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("error:") == 1


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "sweeps").glob("*.py")))
def test_every_sweep_script_has_a_working_smoke_test(script, ray_session, tmp_path,
                                                     monkeypatch):
    # A relative --storage, as a user types it: trials run in Tune's own folders.
    monkeypatch.chdir(tmp_path)
    assert load_script(script[:-3]).main(["--smoke-test", "--storage", "out"]) == 0
    attacks = pd.read_parquet(tmp_path / "out" / "attacks")
    assert len(attacks) > 0 and not attacks.duplicated(["cell_key", "attack"]).any()
    if script == "full_grid.py":
        assert_claims_by_group(tmp_path / "out" / "report.md")


def assert_claims_by_group(report: Path) -> None:
    """The full grid's smoke run (digits with the FC net and the small CNN, two seeds):
    the report's claims table has a row per (dataset, arch) and the pooled one, each on
    two paired seeds, and the pooled effect is the mean of the groups' (one comparison
    per group and seed, so each seed's pooled value averages the two groups')."""
    table = report.read_text().split("### Claims by dataset and architecture")[1]
    rows = [[c.strip() for c in r.strip("|").split("|")]
            for r in table.split("\n### ")[0].splitlines() if r.startswith("| ")]
    for claim in ("1", "2", "3", "4"):
        group = [r for r in rows if r[0] == claim]
        assert [r[1] for r in group] == ["digits / fc", "digits / small_cnn", "pooled"]
        assert all(r[4] == "2" for r in group)  # two paired seeds in every group
        effects = [float(r[2]) for r in group]
        assert effects[2] == pytest.approx((effects[0] + effects[1]) / 2, abs=1.5e-4)
