"""The bare sweep command joins the cluster running on its node, else starts a local one.

The slow tests run ``python sweeps/full_grid.py --smoke-test`` as a user types it: no
``--address``, no ``RAY_ADDRESS``. Ray finds a cluster that ``ray start`` started on
this node through the ``ray_current_cluster`` file under its temp folder
(``$RAY_TMPDIR/ray``); each test points ``RAY_TMPDIR`` and ``HOME`` at folders of its
own, so a cluster another process runs on this machine is never seen, and its head
(its own ports, token auth on) is ended by its own process group's id.

What these tests prove is where the sweep runs (which cluster, which driver), not what
it measures: the smoke grid is cut, with options a user types, to one cell (the
original model, K = 1, the conf attack), enough for the sweep to run trials on that
cluster and write its report. The smoke grid itself is proved in test_engine.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_driver import own_ray_tmpdir
from test_autoscaling import _free_port, ray_head

from mia_ray.engine.cli import add_sweep_args, run_main

ROOT = Path(__file__).resolve().parents[1]
SWEEP_TIMEOUT_S = 1500


def _own_ray_env(home: Path, ray_tmp: Path) -> dict[str, str]:
    """This test's Ray world: its own HOME (auth token) and Ray temp folder, and no
    address or Ray settings inherited from the test process."""
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token",
            "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def ray_start_head(env: dict[str, str], num_cpus: int = 3):
    """``ray start --head`` as a user runs it on a node, on free ports; yields its address."""
    temp_dir = Path(env["RAY_TMPDIR"]) / "ray"
    recorded = temp_dir / "ray_current_cluster"
    with ray_head(env, Path(env["HOME"]) / "head.log", _free_port(), f"--temp-dir={temp_dir}",
                  f"--num-cpus={num_cpus}", ready=recorded.exists):
        yield recorded.read_text().strip()


JOBS = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
from ray._private.state import jobs
print(json.dumps([{"pid": int(j["DriverPid"]), "dead": bool(j["IsDead"])} for j in jobs()]))
"""


ONE_CELL = ("--seeds", "0", "--archs", "fc", "--knowledge", "original", "--shadows", "1",
            "--attacks", "conf")
"""The user's cuts of the smoke grid: one cell, two models, one attack fit."""


def smoke_test_command(storage: Path) -> list[str]:
    """The bare command, as a user types it (no --address, no --local), cut to one cell."""
    return [sys.executable, "sweeps/full_grid.py", "--smoke-test", *ONE_CELL,
            "--storage", str(storage)]


@pytest.mark.slow
def test_the_bare_command_runs_on_the_cluster_ray_start_runs_on_this_node(tmp_path):
    with own_ray_tmpdir() as ray_tmp:
        env = _own_ray_env(tmp_path / "home", ray_tmp)
        with ray_start_head(env) as address:
            # Popen, not run: the driver's pid is what the cluster's job table records.
            sweep = subprocess.Popen(smoke_test_command(tmp_path / "storage"), cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            out, err = sweep.communicate(timeout=SWEEP_TIMEOUT_S)
            jobs = subprocess.run([sys.executable, "-c", JOBS, address], env=env,
                                  capture_output=True, text=True, timeout=120)
    assert sweep.returncode == 0, err[-3000:]
    assert "ray: joined the running Ray cluster (ray start on this node): 1 node, 0 GPUs" \
        in out
    assert jobs.returncode == 0, jobs.stderr[-3000:]
    # The cluster's side: the sweep's process was a driver of that cluster, and is done.
    drivers = json.loads(jobs.stdout.strip().splitlines()[-1])
    assert {"pid": sweep.pid, "dead": True} in drivers
    assert (tmp_path / "storage" / "report.md").exists()


@pytest.mark.slow
def test_with_no_cluster_the_bare_command_starts_a_local_one(tmp_path):
    with own_ray_tmpdir() as ray_tmp:  # an empty Ray temp folder: no ray start recorded
        env = _own_ray_env(tmp_path / "home", ray_tmp)
        sweep = subprocess.run(smoke_test_command(tmp_path / "storage"), cwd=ROOT, env=env,
                               timeout=SWEEP_TIMEOUT_S, capture_output=True, text=True)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "ray: started a local Ray cluster (no running cluster found): 1 node" \
        in sweep.stdout
    assert (tmp_path / "storage" / "report.md").exists()


def _run_main(argv: list[str]) -> int:
    import argparse

    from mia_ray.grid import GridSpec

    p = argparse.ArgumentParser()
    add_sweep_args(p, storage="unused")
    return run_main(GridSpec(), p.parse_args(argv))


@pytest.mark.parametrize("argv,env,named", [
    (["--address", "ray://head:10001"], {}, "address='ray://head:10001'"),
    ([], {"RAY_ADDRESS": "ray://head:10001"}, "RAY_ADDRESS='ray://head:10001'"),
    (["--local", "--address", "auto"], {}, "address='auto'"),
])
def test_ray_client_and_local_with_an_address_are_refused_before_any_work(
        argv, env, named, monkeypatch, capsys, tmp_path):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _run_main(argv + ["--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and named in err
    assert ("--address auto, --address HOST:PORT, RAY_ADDRESS=HOST:PORT" in err
            or "--local" in err)
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_local_overrides_a_ray_client_address_in_the_environment(monkeypatch):
    from mia_ray.engine.address import check_address

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    check_address(None, local=True)  # --local never reads RAY_ADDRESS


def test_a_recorded_cluster_that_does_not_answer_is_not_joined(tmp_path, monkeypatch, capsys):
    from mia_ray.engine.cluster import running_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert running_cluster() is None  # nothing recorded
    (tmp_path / "ray").mkdir()
    # A head ended without `ray stop` leaves its address: nothing listens there now.
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
    assert running_cluster() is None
    assert "does not answer; starting a local one" in capsys.readouterr().out
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert running_cluster() == ("10.0.0.1:6379", "RAY_ADDRESS")
