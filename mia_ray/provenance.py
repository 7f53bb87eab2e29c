"""Which code made a result: the package version plus the git commit it ran from."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

import mia_ray

PACKAGE_DIR = Path(mia_ray.__file__).resolve().parent


def _git(args: list[str], where: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def describe(package_dir: Path) -> str:
    """``VERSION+SHORTSHA``, with ``+dirty`` when tracked files differ from the commit.

    Just ``VERSION`` when ``package_dir`` is not the package folder of a git checkout
    (an installed wheel, or no git): a site-packages copy inside some other repository
    must not borrow that repository's commit.
    """
    try:
        version = metadata.version("mia-ray")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        version = mia_ray.__version__
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if top is None or Path(top).resolve() != package_dir.resolve().parent:
        return version
    sha = _git(["rev-parse", "--short", "HEAD"], package_dir)
    if not sha:
        return version
    changed = _git(["status", "--porcelain", "--untracked-files=no"], package_dir)
    return f"{version}+{sha}" + ("+dirty" if changed else "")


@functools.cache
def code_version() -> str:
    """This process's :func:`describe`, computed once: every results row records it."""
    return describe(PACKAGE_DIR)
