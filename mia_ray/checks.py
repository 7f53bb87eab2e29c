"""Validators: each refuses a bad value with one :class:`SpecError` naming the field,
the value and what is allowed. The specs call them in ``__post_init__``, the commands
on options that never become a spec field."""

from __future__ import annotations

import math

from mia_ray.catalog import (
    MAX_REFERENCES,
    ONLINE_ATTACKS,
    STRUCTURED_METHODS,
    DatasetInfo,
    arch_info,
)
from mia_ray.errors import SpecError


def check_choice(name: str, value: object, allowed) -> None:
    if value not in allowed:
        raise SpecError(name, value, sorted(allowed) if isinstance(allowed, dict) else allowed)


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise SpecError(name, value, rng)


def check_float(name: str, value: object, low: float, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        upper = "inf" if high is None else high
        raise SpecError(name, value, f"a number in {left}{low}, {upper}{right}")


def check_references(value: object) -> None:
    """N, the reference models of a cell: 0 (no online attacks) or an even number up to
    MAX_REFERENCES, so that every audited sample is IN for exactly N / 2 of them."""
    ok = (isinstance(value, int) and not isinstance(value, bool)
          and 0 <= value <= MAX_REFERENCES and value % 2 == 0)
    if not ok:
        raise SpecError("references", value,
                        f"an even integer in [0, {MAX_REFERENCES}] (0 = no reference models)")



def check_online_references(num_references: int, attacks: tuple[str, ...]) -> None:
    """N > 0 exactly when an online attack is asked for: N reference models with no
    attack to use them would train for nothing, and an online attack needs them."""
    online = [a for a in attacks if a in ONLINE_ATTACKS]
    if online and not num_references:
        raise SpecError("references", num_references,
                        f"an even number of reference models >= 2 for the online "
                        f"attacks {', '.join(online)}")
    if num_references and not online:
        raise SpecError("references", num_references,
                        f"0 when no online attack is asked for: only "
                        f"{', '.join(ONLINE_ATTACKS)} use reference models, and the "
                        f"attacks are {', '.join(attacks)}")


def check_prunable(arch: str, method: str, dataset: DatasetInfo | None = None) -> None:
    """Refuse a pruning method that has nothing to act on in this architecture."""
    info = arch_info(arch, dataset)
    if method in STRUCTURED_METHODS and not info.has_conv:
        raise SpecError("method", method,
                        f"a method that applies to {arch!r}, which has no conv layer: "
                        "'l1_unstructured' (or 'slimming' if it has BatchNorm)")
    if method == "slimming" and not info.has_batchnorm:
        raise SpecError("method", method,
                        f"a method that applies to {arch!r}, which has no BatchNorm: "
                        "'l1_unstructured'" + (" or a structured method" if info.has_conv else ""))
