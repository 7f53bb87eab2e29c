"""Trials never starve the trainers: on an autoscaled cluster whose trainers are still
pending when the first worker arrives, waiting trials hold no CPU (issue 28, section 2).

Ray's fake autoscaler (:func:`test_autoscaling.fake_autoscaling_cluster`) grows a
CPU-0 head by one worker of 2 CPUs and 1 GPU. The grid's trainer takes 1 CPU and the
GPU, a trial 1 CPU: had the trials held their CPU while they wait on builds, as they
once did, two of them could take the worker's two CPUs before the trainer is placed,
and every trial would then wait forever on a build no trainer can run. The sweep has
8 cells, four times the 2 trials the worker has CPUs for (and the 2 trials at once the
pool of one trainer allows), and must finish within a bound this test enforces. On
the old design whether it hangs is a race for the new worker's CPUs (it hung past the
bound in one of two runs); on this one there is no race to lose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_driver import tiny_grid
from test_autoscaling import fake_autoscaling_cluster
from test_engine import assert_complete

from mia_ray.engine import capacity
from mia_ray.grid import Resources
from mia_ray.specs import AttackSpec, TrainSpec

ROOT = Path(__file__).resolve().parents[1]
BOUND_S = 480
"""The sweep's limit once the cluster is up: a starved sweep waits forever."""


def crowded_grid():
    """8 cells (2 seeds x the original and 3 pruned victims), K = 1, one epoch: a
    trainer of 1 CPU and 1 GPU, trials of 1 CPU."""
    return tiny_grid(seeds=(0, 1), methods=("l1_unstructured",), sparsities=(0.5, 0.7, 0.9),
                     knowledge=("original", "full"), strengths=(0.0,), num_shadows=1,
                     train=TrainSpec(max_epochs=1), finetune=TrainSpec(max_epochs=1),
                     attacks=AttackSpec(names=("conf", "mentr"), epochs=1),
                     trainer=Resources(gpus=1.0, cpus=1.0), trial=Resources(cpus=1.0))


DRIVER = """
import json, sys
sys.path.insert(0, "tests")
from test_trial_room import crowded_grid
from mia_ray.engine import run_sweep
out = run_sweep(crowded_grid(), sys.argv[1], address=sys.argv[2], progress=False)
json.dump({"errors": out.errors, "trainers": out.trainers,
           "trials": [t.get("node_id") for t in out.trial_results],
           "builds": [e["node_id"] for e in out.events if e["trained"]]},
          open(sys.argv[3], "w"))
"""


def test_the_crowded_grid_has_four_times_more_cells_than_trial_slots():
    grid = crowded_grid()
    worker = {"CPU": 2, "GPU": 1}
    slots_by_cpu = int(worker["CPU"] / grid.trial.cpus)  # trials that once held a CPU
    trainers = capacity.pool_size([{"CPU": 0}, worker], grid.trainer, grid.trial)
    assert trainers == 1
    assert len(grid.cells()) >= 4 * max(slots_by_cpu, capacity.concurrent_trials(trainers))


@pytest.mark.slow
def test_trials_waiting_on_builds_never_take_the_trainers_cpus(tmp_path):
    home, storage, report = tmp_path / "home", tmp_path / "storage", tmp_path / "out.json"
    home.mkdir()
    with fake_autoscaling_cluster(home, max_workers=1) as (address, env):
        try:
            driver = subprocess.run([sys.executable, "-c", DRIVER, str(storage), address,
                                     str(report)], cwd=ROOT, env=env, timeout=BOUND_S,
                                    capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep did not finish in {BOUND_S} s: trials waiting on "
                        "builds took the CPUs the trainer needed")
    assert driver.returncode == 0, driver.stderr[-3000:]
    out = json.loads(report.read_text())
    assert out["errors"] == [] and out["trainers"] == 1
    assert_complete(storage, crowded_grid())
    assert len(out["trials"]) == len(crowded_grid().cells())
    assert len(set(out["builds"])) == 1  # the one worker the autoscaler added
