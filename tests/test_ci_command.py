"""The README's test command is the line CI runs, and both run the two tiers."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_test_command_is_what_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m venv")]
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    readme = [b for b in blocks if "pytest" in b]
    assert len(ci) == 1 and readme == ci
    assert '-m "not slow"' in ci[0] and "-m slow" in ci[0]
    # -rs: a test skipped for a missing system package (rsync, chromium) prints why,
    # on a fresh machine where the README's command did not install them
    assert ci[0].count("pytest -q -rs ") == 2
