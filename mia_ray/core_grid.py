"""A grid whose claims core runs at more seeds than the rest.

The claims are decided by a few cells of a grid: the original model, each pruning
method at the headline sparsity, PPB against the undefended victim, and SAMIA on those
pruned victims. Every other cell (each sparsity, method and adversary-knowledge
setting) feeds the figures, where one or two seeds show the shape. A
:class:`GridWithCore` is a grid at its own (few) seeds plus ``core`` grids at more
seeds (several, since a core is not one product of axes: PPB needs only its own
adversary, not every knowledge setting); its cells are the union of all, deduplicated
by key, so a cell in both is
planned, trained and written once, and a seed added later still trains only its own
builds. ``docs/statistics.md`` says how the core was chosen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mia_ray.grid import GridSpec
from mia_ray.knowledge import CellSpec

SHARED_AXES = ("datasets", "resolved", "archs", "methods", "num_shadows", "attacks", "train",
               "finetune", "epochs_per_dataset", "data_root", "download")
"""Cuts that apply to the core as given: the core runs the same models and attacks."""
CUT_AXES = ("sparsities", "knowledge", "defenses", "strengths")
"""Cuts that the core intersects with its own values: a cut never adds a core value."""


@dataclass(frozen=True)
class GridWithCore(GridSpec):
    """This grid at its ``seeds``, plus the ``core`` grids (of the same datasets, archs and
    schedules) at their own seeds. Trainer, trial and stacking settings are this grid's."""

    core: tuple[GridSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "core", tuple(self.core))
        super().__post_init__()

    def _expand(self) -> list[CellSpec]:
        cells = {c.key(): c for c in super()._expand()}
        for part in self.core:
            for c in part.cells():
                cells.setdefault(c.key(), c)
        return list(cells.values())

    def base(self) -> GridSpec:
        """This grid without its core."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(GridSpec)}
        return GridSpec(**fields)

    def cut(self, changes: dict) -> GridSpec:
        """The user's cuts: ``seeds`` replaces every seed (the core goes: one seed list
        for everything); shared axes apply to every grid; sparsities, knowledge,
        defenses and strengths apply to this grid and are intersected with each core
        grid's (a core grid left with an empty axis is dropped)."""
        if "seeds" in changes:
            return dataclasses.replace(self.base(), **changes)
        core = []
        for part in self.core:
            part_changes = {k: v for k, v in changes.items() if k in SHARED_AXES}
            for axis in CUT_AXES:
                if axis in changes:
                    part_changes[axis] = tuple(v for v in getattr(part, axis)
                                               if v in changes[axis])
            if all(part_changes.get(axis, True) for axis in CUT_AXES):
                core.append(dataclasses.replace(part, **part_changes))
        return dataclasses.replace(self, **changes, core=tuple(core))

    def core_alone(self) -> GridSpec | None:
        """The core grids as one grid (None without a core): what the claims need."""
        if not self.core:
            return None
        first, rest = self.core[0], self.core[1:]
        fields = {f.name: getattr(first, f.name) for f in dataclasses.fields(GridSpec)}
        return GridWithCore(**fields, core=rest)

    def describe_core(self) -> str:
        """One line per core grid: its seeds and the axes it narrows."""
        return "; ".join(
            f"seeds {', '.join(map(str, g.seeds))} on sparsities "
            f"{', '.join(f'{s:g}' for s in g.sparsities)}, knowledge {', '.join(g.knowledge)}, "
            f"{', '.join(g.defenses)} at {', '.join(f'{s:g}' for s in g.strengths)}"
            for g in self.core)
