"""code_version says which code made a row: the package version and the git commit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mia_ray.provenance import PACKAGE_DIR, code_version, describe

FORMAT = re.compile(r"^\d+\.\d+\.\d+(\+[0-9a-f]{7,40}(\+dirty)?)?$")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_this_process_has_a_well_formed_code_version():
    assert FORMAT.match(code_version()), code_version()


def test_outside_a_checkout_it_is_the_bare_version(tmp_path):
    package = tmp_path / "mia_ray"
    package.mkdir()
    assert re.fullmatch(r"\d+\.\d+\.\d+", describe(package))


@needs_git
def test_a_checkout_adds_its_commit_and_says_when_it_is_dirty(tmp_path):
    package = tmp_path / "mia_ray"
    package.mkdir()
    (package / "x.py").write_text("A = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "first")
    sha = _git(tmp_path, "rev-parse", "--short", "HEAD")
    clean = describe(package)
    assert FORMAT.match(clean) and clean.endswith(f"+{sha}")
    (package / "x.py").write_text("A = 2\n")
    assert describe(package) == f"{clean}+dirty"
    (tmp_path / "untracked.txt").write_text("not code\n")  # untracked files do not count
    (package / "x.py").write_text("A = 1\n")
    assert describe(package) == clean


@needs_git
def test_a_package_inside_another_repository_does_not_borrow_its_commit(tmp_path):
    nested = tmp_path / "site-packages" / "mia_ray"
    nested.mkdir(parents=True)
    (nested / "x.py").write_text("A = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "first")
    assert "+" not in describe(nested)


def test_this_checkout_reports_its_head():
    top = PACKAGE_DIR.parent
    if shutil.which("git") is None or not (top / ".git").exists():
        pytest.skip("not running from a git checkout")
    head = _git(top, "rev-parse", "--short", "HEAD")
    assert code_version().split("+")[1] == head
