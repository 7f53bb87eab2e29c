"""The audit as a grid on the sweep engine.

An audit is a grid of one dataset and one architecture whose victim is the user's
model: knowledge ``original`` attacks it as it is, knowledge ``full`` attacks each
pruned (and fine-tuned, optionally defended) variant with shadows pruned the same
way, which is what an auditor who did the pruning knows. The member set and the
model's hash enter every dataset key, so shadows and variants of another member set
or another model are never reused; the engine, its store and resume are the sweep's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mia_ray.grid import GridSpec
from mia_ray.keys import spec_default
from mia_ray.knowledge import CellSpec
from mia_ray.specs import DatasetSpec

AUDIT_KNOWLEDGE = ("original", "full")


@dataclass(frozen=True)
class AuditGrid(GridSpec):
    """A :class:`GridSpec` whose datasets carry the audited member set and model."""

    label_column: str = spec_default(DatasetSpec, "label_column")
    members: str = ""
    """Hash of the member indices (``mia_ray.data.members.members_hash``)."""
    members_path: str = field(default="", metadata={"key": False})
    member_indices: np.ndarray | None = field(default=None, compare=False,
                                              metadata={"key": False, "record": False})
    """The member indices, read from ``members_path`` when the audit was resolved."""
    audited: str = ""
    """Content hash of the audited model file."""

    def dataset_spec(self, name: str, seed: int) -> DatasetSpec:
        return self._dataset(name, seed=seed, num_shadows=self.num_shadows,
                             root=self.data_root, download=self.download,
                             label_column=self.label_column, members=self.members,
                             members_path=self.members_path,
                             member_indices=self.member_indices, audited=self.audited)

    def original_cells(self) -> list[CellSpec]:
        """One unpruned cell per seed: its victim is the model to import."""
        return [c for c in self.cells() if c.knowledge == "original"]
