"""The full grid's seed designs side by side: builds, attack fits and assumed GPU-hours.

    python bench/seed_designs.py        # about a minute: plans only, nothing trains

Each design is the full grid at seed 0 plus a claims core at seeds 0-4 (or no core, or
every cell at five seeds), planned with ``mia_ray.planner.plan``. "Decidable" counts
the claim verdicts whose deciding tests all rest on five seeds: four per (dataset,
arch) group, three where the core has one sparsity (claim 1's slope then has one
seed). docs/statistics.md ("The full grid's seeds") holds the table this prints.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))

from full_grid import CORE_SEEDS, claims_core, full_grid  # noqa: E402

from mia_ray.core_grid import GridWithCore  # noqa: E402
from mia_ray.grid import GridSpec  # noqa: E402
from mia_ray.planner import gpu_hours_estimate, plan  # noqa: E402


def with_core(base: GridSpec, seeds: tuple[int, ...], core: tuple[GridSpec, ...]) -> GridSpec:
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(GridSpec)}
    return GridWithCore(**{**fields, "seeds": seeds}, core=core)


def main() -> int:
    base = full_grid().base()
    groups = len({(c.dataset.name, c.arch) for c in base.cells()})
    designs = [
        ("every cell at seed 0", base, 0),
        ("core at 0.7 only, rest at seed 0",
         with_core(base, (0,), claims_core(base, sparsities=(0.7,))), 3 * groups),
        ("core at 0.7 and 0.9, rest at seed 0 (default)", full_grid(), 4 * groups),
        ("core at 0.5, 0.7 and 0.9, rest at seed 0",
         with_core(base, (0,), claims_core(base, sparsities=(0.5, 0.7, 0.9))), 4 * groups),
        ("core at 0.7 and 0.9, rest at seeds 0 and 1",
         with_core(base, (0, 1), claims_core(base)), 4 * groups),
        ("every cell at seeds 0-4", dataclasses.replace(base, seeds=CORE_SEEDS), 4 * groups),
        ("the claims core alone", full_grid().core_alone(), 4 * groups),
    ]
    print(f"{groups} (dataset, arch) groups, {4 * groups} claim verdicts")
    print("| design | model builds | attack fits | GPU-hours (assumed) | decidable "
          "| per GPU-hour |")
    print("|---|---|---|---|---|---|")
    for label, grid, decidable in designs:
        p = plan(grid)
        hours = gpu_hours_estimate(p)
        print(f"| {label} | {len(p.models):,} | {len(p.attack_fits):,} | {hours:.1f} | "
              f"{decidable} | {decidable / hours:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
