"""The Ray layer: the only package in mia_ray that imports ray.

``import mia_ray.engine`` (and ``mia_ray.engine.cli``, which the sweep scripts import
for ``--dry-run`` and ``--help``) loads no Ray: the names below come from
:mod:`mia_ray.engine.sweep` on first use, so Ray starts loading only when a sweep does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mia_ray.engine.sweep import SweepResult, layout, run_sweep, validate

__all__ = ["SweepResult", "layout", "run_sweep", "validate"]

MAX_FAILURES = 3
"""Retries of a failed trial (a killed actor, trial or node costs a retry, never a lost
result): ``run_sweep``'s default and the sweeps' ``--max-failures``."""


def __getattr__(name: str) -> Any:
    # PEP 562: resolved only when someone asks for one of these names.
    if name in __all__:
        from mia_ray.engine import sweep

        return getattr(sweep, name)
    raise AttributeError(f"module 'mia_ray.engine' has no attribute {name!r}")
