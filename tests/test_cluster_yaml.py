"""cluster.yaml: valid for Ray's autoscaler, and it ships code only."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_NEVER = (".venv", "results", "data", "store")


def config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_schema():
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(config(), schema)
    validate_config(prepare_config(config()))  # the same schema after Ray's defaults
    broken = config()
    broken["available_node_types"]["head"]["resorces"] = {"CPU": 0}  # a typo is caught
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_head_gpu_image_auth_and_dependencies():
    c = config()
    assert c["available_node_types"][c["head_node_type"]]["resources"]["CPU"] == 0
    workers = [t for name, t in c["available_node_types"].items() if name != c["head_node_type"]]
    assert all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    # GPU workers: Ray's CUDA image on a Deep Learning AMI (driver + container runtime).
    assert c["docker"]["image"].endswith("-gpu")
    assert all(t["node_config"]["ImageId"] == "latest_dlami" for t in workers)
    install = " ".join(c["setup_commands"])
    assert "-c sweeps/constraints.txt -e ." in install
    pins = (ROOT / "sweeps/constraints.txt").read_text().splitlines()
    assert {"torch==2.14.1", "ray==2.60.0"} <= set(pins)
    starts = c["head_start_ray_commands"] + c["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in starts if "ray start" in cmd)
    assert "--dashboard-host=127.0.0.1" in " ".join(c["head_start_ray_commands"])
    assert c["file_mounts"]["~/mia-ray"] == "."


def _fake_checkout(root: Path) -> None:
    """The folders a real checkout grows, beside the code that must ship."""
    for rel in (".venv/lib/python3.11/site-packages/torch/__init__.py",
                "data/cifar-10-batches-bin/data_batch_1.bin",
                "results/small_grid/attacks/a.parquet",
                "store/models/k/weights.pt", "mia_ray/data/loaders.py",
                "mia_ray/data/__pycache__/loaders.cpython-311.pyc", "sweeps/full_grid.py",
                "pyproject.toml", "sweeps/constraints.txt", "docs/datasets.md"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


@pytest.mark.skipif(shutil.which("rsync") is None,
                    reason="rsync is not installed (apt-get install -y rsync): `ray up` needs it")
def test_ray_up_ships_code_but_never_venv_results_data_or_store(tmp_path):
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    c = config()
    # The exact arguments `ray up` passes to rsync for file_mounts.
    args = SSHCommandRunner._create_rsync_filter_args(
        None, {"rsync_exclude": c.get("rsync_exclude"), "rsync_filter": c.get("rsync_filter")})
    src, dst = tmp_path / "checkout", tmp_path / "node"
    _fake_checkout(src)
    # `ray up` syncs a folder with a trailing slash: patterns anchor at the checkout.
    subprocess.run(["rsync", "-a", *args, f"{src}/", str(dst)], check=True)
    shipped = {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()}
    assert shipped == {"mia_ray/data/loaders.py", "sweeps/full_grid.py", "pyproject.toml",
                       "sweeps/constraints.txt", "docs/datasets.md"}
    for name in SHIPPED_NEVER:
        assert not (dst / name).exists()

    # The real checkout: every tracked source ships, nothing ignored does.
    real = tmp_path / "real"
    subprocess.run(["rsync", "-a", *args, f"{ROOT}/", str(real)], check=True)
    for rel in ("mia_ray/data/staging.py", "mia_ray/engine/sweep.py", "cluster.yaml",
                "sweeps/constraints.txt", "pyproject.toml", "sweeps/full_grid.py"):
        assert (real / rel).is_file(), rel
    for name in SHIPPED_NEVER + (".git",):
        assert not (real / name).exists(), name


def test_the_planners_node_hours_assume_the_cluster_of_cluster_yaml(monkeypatch):
    from mia_ray import planner

    c = config()
    worker = c["available_node_types"]["gpu_worker"]
    assert planner.CLUSTER_WORKERS == worker["max_workers"] == c["max_workers"]
    assert planner.GPUS_PER_WORKER == worker["resources"]["GPU"]
    monkeypatch.setattr(planner, "gpu_hours_estimate", lambda p: 80.0)
    # 80 GPU-hours over 8 one-GPU workers: 10 h, on 9 nodes counting the head.
    assert planner.node_hours_estimate(None) == (90.0, 10.0)
    assert planner.node_hours_estimate(None, workers=4, gpus_per_worker=2) == (50.0, 10.0)
