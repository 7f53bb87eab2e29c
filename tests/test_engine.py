"""The Ray engine on a real (small) Ray: dedup, fractional GPUs, faults, resume, nodes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_driver import tiny_grid

from mia_ray.planner import plan, stack_groups
from mia_ray.results import METRIC_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "sweep_driver.py"


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


def max_overlap(events: list[dict]) -> int:
    """Most trainer calls running at the same instant, from their [start, end] intervals.

    The models of one stacked job share one call: they count once.
    """
    calls = {(e["actor_id"], e["start"], e["end"]) for e in events}
    edges = sorted([(start, 1) for _, start, _ in calls] + [(end, -1) for _, _, end in calls],
                   key=lambda t: (t[0], t[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_each_model_trained_once_on_quarter_gpus(ray_session, tmp_path):
    # Four trainers at 0.25 of the (fake) GPU: all four fit on it at once. Models
    # train one per call here, so that there are enough calls to fill four trainers.
    from mia_ray.engine import run_sweep
    from mia_ray.grid import Resources

    grid = tiny_grid(trainer=Resources(gpus=0.25, cpus=0.5), num_trainers=4, stack_models=1)
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
    assert max_overlap(builds) == 4
    assert set(models["trained_together"]) == {1}


def test_a_stage_trains_as_one_stacked_job(ray_session, tmp_path):
    import torch

    from mia_ray.engine import run_sweep
    from mia_ray.stages import train_model
    from mia_ray.store import ArtifactStore

    grid = tiny_grid(methods=("l1_unstructured",), knowledge=("full",), strengths=(4.0,),
                     num_trainers=2)
    the_plan = plan(grid)
    outcome = run_sweep(grid, str(tmp_path), progress=False)
    assert outcome.errors == []
    assert_complete(tmp_path, grid)
    # Two stages (the originals, the PPB-pruned models), each its victim and K shadows.
    stages = stack_groups(the_plan.models, limit=grid.stack_models)
    assert [len(stage) for stage in stages] == [grid.num_shadows + 1] * 2
    builds = [e for e in outcome.events if e["kind"] == "model" and e["trained"]]
    assert sorted(e["key"] for e in builds) == sorted(s.key() for s in the_plan.models)
    assert len({(e["actor_id"], e["start"]) for e in builds}) == 2  # two trainer calls
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


def test_a_killed_trainer_costs_a_retry_not_a_result(ray_session, tmp_path):
    import ray

    from mia_ray.engine import run_sweep
    from mia_ray.engine.sweep import COORDINATOR_NAME

    grid = tiny_grid(num_trainers=2)
    box: dict = {}
    sweep = threading.Thread(target=lambda: box.update(
        outcome=run_sweep(grid, str(tmp_path), progress=False)))
    sweep.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and sweep.is_alive():
        try:
            coordinator = ray.get_actor(COORDINATOR_NAME)
            stats = ray.get(coordinator.stats.remote())
        except ValueError:  # not created yet
            time.sleep(0.2)
            continue
        trainer = ray.get(coordinator.trainer_handles.remote())[0]
        killed_id = trainer._actor_id.hex()
        seen = [e for e in ray.get(coordinator.get_events.remote())
                if e["actor_id"] == killed_id]
        if seen and stats["in_flight"] > 0:  # it has built before and is busy again
            old_pid = seen[-1]["pid"]
            ray.kill(trainer, no_restart=False)  # as if its process died mid-build
            killed = trainer
        time.sleep(0.1)
    sweep.join(timeout=600)
    assert killed is not None, "the sweep finished before a trainer could be killed"
    outcome = box["outcome"]
    assert outcome.errors == []
    assert_complete(tmp_path, grid)
    # The restarted trainer is a new process, and it did the builds that one lost.
    pids = [e["pid"] for e in outcome.events if e["actor_id"] == killed_id]
    assert pids[0] == old_pid and pids[-1] != old_pid
    assert sorted(outcome.trained("model")) == sorted(s.key() for s in plan(grid).models)


def _snapshot(storage: Path) -> dict[str, int]:
    files = list((storage / "attacks").glob("*.parquet"))
    files += list((storage / "artifacts" / "models").glob("*/meta.json"))
    return {str(p.relative_to(storage)): p.stat().st_mtime_ns for p in files}


def test_killed_driver_resumes_without_recomputing(ray_session, tmp_path):
    from mia_ray.engine import run_sweep

    storage = tmp_path / "sweep"
    first = subprocess.Popen([sys.executable, str(DRIVER), str(storage)], cwd=ROOT,
                             start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if len(list((storage / "attacks").glob("*.parquet"))) >= 2:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the first run ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
    first.wait()
    before = _snapshot(storage)
    done_cells = {Path(k).stem for k in before if k.startswith("attacks")}
    done_models = {Path(k).parent.name for k in before if k.startswith("artifacts")}
    grid = tiny_grid()
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


MULTINODE = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
import ray
ray.init(address=cluster.address, log_to_driver=False)
sys.path.insert(0, "tests")
from sweep_driver import tiny_grid
from mia_ray.engine import run_sweep
out = run_sweep(tiny_grid(num_trainers=2), sys.argv[1], progress=False)
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
json.dump({"nodes": nodes, "events": out.events, "trials": out.trial_results,
           "errors": out.errors}, open(sys.argv[2], "w"))
ray.shutdown()
cluster.shutdown()
"""


def test_two_nodes_share_one_storage_root(tmp_path):
    storage, report = tmp_path / "shared", tmp_path / "multinode.json"
    subprocess.run([sys.executable, "-c", MULTINODE, str(storage), str(report)], cwd=ROOT,
                   check=True, timeout=600, capture_output=True)
    out = json.loads(report.read_text())
    assert out["errors"] == [] and len(out["nodes"]) == 2
    build_nodes = {e["node_id"] for e in out["events"] if e["trained"]}
    trial_nodes = {t["node_id"] for t in out["trials"]}
    assert build_nodes == set(out["nodes"])
    assert trial_nodes == set(out["nodes"])
    assert_complete(storage, tiny_grid())


def test_cluster_yaml_passes_rays_own_schema():
    import jsonschema
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # ray-schema.json; raises on a violation
    assert config["available_node_types"][config["head_node_type"]]["resources"]["CPU"] == 0
    assert any("pip install -e ." in c for c in config["setup_commands"])
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    config["available_node_types"]["head"]["resorces"] = {"CPU": 0}  # a typo is caught
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("args, field", [
    (["--methods", "magnitude"], "method='magnitude'"),
    (["--knowledge", ""], "knowledge=()"),
    (["--trainer-gpus", "1.5"], "trainer_gpus=1.5"),
    (["--stack-attacks", "0"], "stack_attacks=0"),
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


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "sweeps").glob("*.py")))
def test_every_sweep_script_has_a_working_smoke_test(script, ray_session, tmp_path,
                                                     monkeypatch):
    # A relative --storage, as a user types it: trials run in Tune's own folders.
    monkeypatch.chdir(tmp_path)
    assert load_script(script[:-3]).main(["--smoke-test", "--storage", "out"]) == 0
    attacks = pd.read_parquet(tmp_path / "out" / "attacks")
    assert len(attacks) > 0 and not attacks.duplicated(["cell_key", "attack"]).any()
