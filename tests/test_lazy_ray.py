"""Ray loads only when a sweep starts: not on import, not for --dry-run or --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "sweeps").glob("*.py"))

# One fresh interpreter walks through the steps in order and records, after each,
# whether Ray has been imported: once it is in sys.modules it stays, so the first
# step that loads it is the one reported.
STEPS = """
import contextlib, io, json, runpy, sys
seen = {}
import mia_ray.engine, mia_ray.engine.cli
seen["import"] = "ray" in sys.modules
for script in sys.argv[1:]:
    for flag in ("--help", "--dry-run"):
        sys.argv = [f"sweeps/{script}", flag]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                runpy.run_path(sys.argv[0], run_name="__main__")
            except SystemExit as exc:
                assert exc.code in (0, None), f"{script} {flag}: exit {exc.code}"
        if flag == "--dry-run":
            assert "unique model builds:" in out.getvalue(), out.getvalue()
        seen[f"{script} {flag}"] = "ray" in sys.modules
import mia_ray.engine as engine, mia_ray.engine.sweep as sweep
assert engine.run_sweep is sweep.run_sweep and engine.SweepResult is sweep.SweepResult
seen["a sweep"] = "ray" in sys.modules
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def ray_loaded() -> dict[str, bool]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", STEPS, *SCRIPTS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("step", ["import", *(f"{s} {f}" for s in SCRIPTS
                                            for f in ("--help", "--dry-run"))])
def test_no_ray_before_a_sweep(ray_loaded, step):
    assert ray_loaded[step] is False


def test_the_engine_names_resolve_to_the_sweep_and_load_ray(ray_loaded):
    # The other check could pass by accident if the subprocess never saw Ray at all.
    assert ray_loaded["a sweep"] is True
