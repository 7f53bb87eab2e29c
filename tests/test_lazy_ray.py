"""Ray loads only when a sweep starts: not on import, not for --dry-run or --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUN_SCRIPT = """
import runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    assert exc.code in (0, None), f"exit {exc.code}"
print("ray loaded" if "ray" in sys.modules else "no ray")
"""


def _python(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_importing_the_engine_loads_no_ray():
    out = _python("-c", "import sys, mia_ray.engine, mia_ray.engine.cli; "
                        "print('ray loaded' if 'ray' in sys.modules else 'no ray')")
    assert out.strip() == "no ray"


def test_the_engine_names_still_resolve_and_then_load_ray():
    # The lazy names are the sweep module's own objects, so the check above can fail.
    out = _python("-c", "import sys, mia_ray.engine as e, mia_ray.engine.sweep as s; "
                        "assert e.run_sweep is s.run_sweep and e.SweepResult is s.SweepResult; "
                        "print('ray loaded' if 'ray' in sys.modules else 'no ray')")
    assert out.strip() == "ray loaded"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "sweeps").glob("*.py")))
@pytest.mark.parametrize("flag", ["--dry-run", "--help"])
def test_dry_run_and_help_load_no_ray(script, flag):
    out = _python("-c", RUN_SCRIPT, f"sweeps/{script}", flag)
    assert out.splitlines()[-1] == "no ray"
    if flag == "--dry-run":
        assert "unique model builds:" in out
