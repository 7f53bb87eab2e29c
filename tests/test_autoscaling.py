"""The trainer pool on an autoscaled cluster: sized for the nodes the cluster can reach.

The fast tests count trainers for hand-sized clusters (cluster.yaml among them). The
slow one starts Ray's fake autoscaler the way cluster.yaml starts the real one: a head
with no CPU, GPU workers from zero, the autoscaling config at ~/ray_bootstrap_config.yaml.

Ray's ``ray.cluster_utils.AutoscalingCluster`` is not used: its ``start()`` runs
``ray stop --force``, which kills every Ray process of this user on the machine (other
test runs included), and its config template (``fake_multi_node/example.yaml``) is not
in Ray's wheel. :func:`fake_autoscaling_cluster` does what it does for one cluster of
its own: its own ports, its own process group, ended by that group's id.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweep_driver import own_ray_tmpdir, tiny_grid
from test_engine import assert_complete

from mia_ray.engine import capacity
from mia_ray.grid import Resources
from mia_ray.specs import AttackSpec

ROOT = Path(__file__).resolve().parents[1]
FULL_GRID_TRAINER = Resources(gpus=0.25, cpus=2.0)  # sweeps/full_grid.py
FULL_GRID_TRIAL = Resources(gpus=0.0, cpus=1.0)


def test_cluster_yaml_plans_three_trainers_on_each_of_its_eight_gpu_workers():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    nodes = capacity.reachable_nodes(config)
    assert nodes == [{"CPU": 0}] + [{"CPU": 8, "GPU": 1}] * 8
    # A g5.2xlarge worker: 4 quarter-GPU shares, but 8 CPUs less one trial's 1 leave 7,
    # room for 3 trainers of 2 CPUs. The head (no CPU) holds none. 8 x 3 = 24.
    assert capacity.pool_size(nodes, FULL_GRID_TRAINER, FULL_GRID_TRIAL) == 24
    # --max-gpus 4: four such workers, 12 trainers; 2.5 GPUs: two whole workers (6)
    # and half a GPU beside 8 CPUs (2 quarter shares), 8.
    assert capacity.pool_size(nodes, FULL_GRID_TRAINER, FULL_GRID_TRIAL, max_gpus=4) == 12
    assert capacity.pool_size(nodes, FULL_GRID_TRAINER, FULL_GRID_TRIAL, max_gpus=2.5) == 8


def test_worker_types_share_the_clusters_worker_limit():
    # 3 workers in all: the GPU type (max 2) first, then 1 of the 4 CPU workers allowed.
    config = {"max_workers": 3, "head_node_type": "head",
              "available_node_types": {
                  "head": {"resources": {"CPU": 4}},
                  "cpu": {"resources": {"CPU": 16}, "max_workers": 4},
                  "gpu": {"resources": {"CPU": 4, "GPU": 2}, "max_workers": 2},
                  "sized_by_the_cloud": {"max_workers": 5}}}  # no resources: left out
    nodes = capacity.reachable_nodes(config)
    assert nodes == [{"CPU": 4}, {"CPU": 4, "GPU": 2}, {"CPU": 4, "GPU": 2}, {"CPU": 16}]
    cpu_trainer, trial = Resources(gpus=0.0, cpus=1.0), Resources(cpus=0.5)
    # CPU trainers: (4 - 0.5) -> 3 per 4-CPU node, (16 - 0.5) -> 15: 3 + 3 + 3 + 15.
    assert capacity.pool_size(nodes, cpu_trainer, trial) == 24
    # Half-GPU trainers of 1 CPU: 2 GPUs -> 4 shares but 3 CPUs; CPU-only nodes: none.
    assert capacity.pool_size(nodes, Resources(gpus=0.5, cpus=1.0), trial) == 6


def test_max_gpus_without_a_known_gpu_node_counts_gpu_shares():
    # Nothing says how the GPUs will come (no config, no GPU node yet): 3 GPUs in
    # quarters are 12 trainers.
    assert capacity.pool_size([{"CPU": 0}], FULL_GRID_TRAINER, FULL_GRID_TRIAL,
                              max_gpus=3) == 12


def test_no_autoscaler_config_outside_a_ray_up_head(tmp_path):
    assert capacity.autoscaler_config(str(tmp_path / "absent.yaml")) is None
    (tmp_path / "bad.yaml").write_text("{not: [yaml")
    assert capacity.autoscaler_config(str(tmp_path / "bad.yaml")) is None
    (tmp_path / "cluster.json").write_text(json.dumps(
        {"available_node_types": {"w": {"resources": {"CPU": 2}}}}))  # ray up writes JSON
    assert capacity.autoscaler_config(str(tmp_path / "cluster.json")) is not None


# --- Ray's fake autoscaler -------------------------------------------------------------

HEAD_TYPE = "ray.head.default"  # the name Ray's fake node provider gives the head
GPU_WORKER = {"resources": {"CPU": 2, "GPU": 1, "object_store_memory": 300 * 2**20},
              "node_config": {}, "min_workers": 0, "max_workers": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def fake_cluster_config(gcs_address: str, max_workers: int = 2) -> dict:
    """cluster.yaml's shape on Ray's fake provider: a CPU-0 head, GPU workers from 0
    (``GPU_WORKER``, at most ``max_workers`` of them)."""
    return {
        "cluster_name": "mia-ray-fake", "max_workers": max_workers, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address,
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "launch_multiple": True},
        "auth": {}, "docker": {}, "head_node_type": HEAD_TYPE,
        "available_node_types": {HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {},
                                             "max_workers": 0},
                                 "gpu_worker": {**GPU_WORKER,
                                                "max_workers": max_workers}},
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands",
                           "worker_start_ray_commands", "cluster_synced_files",
                           "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }


@contextlib.contextmanager
def fake_autoscaling_cluster(home: Path, max_workers: int = 2):
    """Start a head with Ray's fake autoscaler; yield its address and environment.

    ``home`` plays the head's home folder: the config goes where ``ray up`` puts it,
    and the driver must run with the same HOME to find it (and Ray's auth token).
    Every process (head, autoscaler, the worker nodes it adds, their workers) is in
    one new process group, which the end signals by its id.
    """
    import ray

    address = f"{ray.util.get_node_ip_address()}:{_free_port()}"
    config = home / "ray_bootstrap_config.yaml"
    config.write_text(json.dumps(fake_cluster_config(address, max_workers)))
    # Token auth on, with the token where `ray get-auth-token --generate` puts it under
    # this HOME: whatever an earlier test's ray.init() left in os.environ (it turns
    # token mode on for child processes), the head, the driver and the nodes agree.
    (home / ".ray").mkdir(exist_ok=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    log = home / "head.log"
    with own_ray_tmpdir() as ray_tmp:  # `ray start` records the head's address there
        env = {**os.environ, "HOME": str(home), "RAY_FAKE_CLUSTER": "1",
               "RAY_AUTH_MODE": "token", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_TMPDIR": str(ray_tmp)}
        with ray_head(env, log, address.rsplit(":", 1)[1], f"--autoscaling-config={config}",
                      "--num-cpus=0", ready=lambda: "Ray runtime started" in log.read_text()):
            yield address, env


@contextlib.contextmanager
def ray_head(env: dict[str, str], log: Path, port, *options: str, ready):
    """``ray start --head --block`` on ``port`` with ``options``, in a process group of its
    own, logging to ``log``: returns once ``ready()``, and ends the whole group on exit."""
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
           f"--port={port}", *options, "--num-gpus=0", f"--object-store-memory={300 * 2**20}",
           "--include-dashboard=false", f"--dashboard-agent-listen-port={_free_port()}",
           "--disable-usage-stats"]
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ready():
            assert head.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the head did not start in 180 s"
            time.sleep(0.5)
        yield
    finally:
        head.terminate()  # ray start --block stops the head's processes on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        _end_group(head.pid)

def _end_group(pgid: int) -> None:
    """SIGTERM the group this test started (the worker nodes outlive the head), then
    SIGKILL what is left of it after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def autoscaled_grid():
    """The original model and the undefended pruned one, K = 1, threshold attacks: 2
    cells, 4 models in 2 cohorts, 2 attack fits. Once the originals are built, the pruned
    cohort and the originals' attack fit are wanted at once, by two trials. One whole GPU
    and one CPU per trainer: a 2-CPU, 1-GPU worker holds one trainer and a trial beside
    it, so two trainers need two workers.
    """
    return tiny_grid(methods=("l1_unstructured",), knowledge=("original", "full"),
                     strengths=(0.0,), num_shadows=1,
                     attacks=AttackSpec(names=("conf", "mentr"), epochs=1),
                     trainer=Resources(gpus=1.0, cpus=1.0), trial=Resources(cpus=0.5))


DRIVER = """
import json, sys
sys.path.insert(0, "tests")
from sweep_driver import hold_builds_until_trainers_run
from test_autoscaling import autoscaled_grid
from mia_ray.engine import run_sweep
import ray
storage, address, report, gate = sys.argv[1:5]
ray.init(address=address, log_to_driver=False,
         runtime_env=hold_builds_until_trainers_run(gate, 2))
out = run_sweep(autoscaled_grid(), storage, address=address, progress=False)
nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
json.dump({"events": out.events, "errors": out.errors, "nodes": nodes,
           "pool": [getattr(out, "trainers", None), getattr(out, "trainer_pool", None)]},
          open(report, "w"))
"""


@pytest.mark.slow
def test_an_autoscaled_cluster_builds_on_a_trainer_per_worker_it_adds(tmp_path):
    home, storage, report = tmp_path / "home", tmp_path / "storage", tmp_path / "out.json"
    gate = tmp_path / "joined"
    home.mkdir()
    with fake_autoscaling_cluster(home) as (address, env):
        # The sweep starts on a cluster with no worker, as `ray submit` on cluster.yaml.
        driver = subprocess.run([sys.executable, "-c", DRIVER, str(storage), address,
                                 str(report), str(gate)], cwd=ROOT, env=env, timeout=600,
                                capture_output=True, text=True)
    assert driver.returncode == 0, driver.stderr[-3000:]
    out = json.loads(report.read_text())
    assert out["errors"] == []
    assert_complete(storage, autoscaled_grid())
    builds = [e for e in out["events"] if e["trained"]]
    gpu_workers = {n for n, res in out["nodes"].items() if res.get("GPU")}
    # Both workers the config allows were added, and each one's trainer built models.
    assert len({e["actor_id"] for e in builds}) == 2
    assert {e["node_id"] for e in builds} == gpu_workers and len(gpu_workers) == 2
    assert out["pool"][0] == 2 and capacity.AUTOSCALER_CONFIG in out["pool"][1]
