"""What the grid knows about a dataset and an architecture before building either.

Two plain records, imported by :mod:`mia_ray.catalog` (the tables of built-in names)
and by :mod:`mia_ray.archs` (architectures by reference), so that neither of those
needs the other at import time: the catalog reaches the references, never back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the code needs to know about a dataset before loading it."""

    kind: str  # "image" or "tabular"
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def epochs(self) -> int:
        """The authors' training budget: 100 epochs on image sets, 50 on tabular ones
        (their per-dataset configs); fine-tuning gets half (see :func:`reference_budgets`)."""
        return 100 if self.kind == "image" else 50


@dataclass(frozen=True)
class ArchInfo:
    """Which pruning methods an architecture admits, and which inputs it takes."""

    has_conv: bool
    has_batchnorm: bool
    input_kinds: tuple[str, ...]
    stacks: bool = False
    """Whether a cohort's models of this architecture train together (mia_ray.stacking).
    True where stacked training runs as grouped layers and measured faster than one by
    one. The generic vmap path that ResNet, VGG and DenseNet would take measured
    slower on the CPU and is unmeasured on a GPU, so those train one by one. The
    figures and their commands: BENCHMARKS.md, sections 2 and 6."""
