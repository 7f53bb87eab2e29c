"""What the grid knows about a dataset and an architecture before building either.

Plain records, imported by :mod:`mia_ray.catalog` (the tables of built-in names),
by :mod:`mia_ray.archs` (architectures by reference) and by the specs, so that none
of those needs another at import time. An :class:`ArchReference` is what resolving
a user's architecture leaves in a spec: no spec imports the user's code.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTHORS_EPOCHS = {"image": 100, "tabular": 50}
"""The authors' training budget per kind of data (their per-dataset configs): what
``DatasetInfo.epochs`` says and what ``TrainSpec.max_epochs`` defaults to (images')."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the code needs to know about a dataset before loading it."""

    kind: str  # "image" or "tabular"
    num_classes: int
    input_shape: tuple[int, ...]
    pool: int = 0
    """Samples in the pool (0: not known before it is read), for the dry run's estimate."""

    @property
    def epochs(self) -> int:
        """The authors' training budget for this kind of data (``AUTHORS_EPOCHS``);
        fine-tuning gets ``TrainSpec.finetune_budget`` of it (:func:`epoch_budgets`)."""
        return AUTHORS_EPOCHS[self.kind]


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


class ArchReference(str):
    """An architecture by reference (``package.module:function``), resolved.

    It reads as the reference the user wrote (every table, log and lookup sees that
    text) and carries what :func:`mia_ray.resolution.resolve_arch` found by importing
    and building it once: ``identity``, the reference plus a hash of its module's
    source (what enters the keys), and the :class:`ArchInfo` of the model built for
    each dataset input it was resolved for. Specs read these and never import it.
    """

    identity: str
    layers: tuple[tuple[tuple[tuple[int, ...], int], ArchInfo], ...]

    def __new__(cls, ref: str, identity: str = "",
                layers: tuple[tuple[tuple[tuple[int, ...], int], ArchInfo], ...] = ()):
        self = super().__new__(cls, ref)
        self.identity = identity
        self.layers = tuple(layers)
        return self

    def __reduce__(self):  # pickled to Ray workers with what was resolved
        return (ArchReference, (str(self), self.identity, self.layers))

    def info_for(self, dataset: DatasetInfo) -> ArchInfo | None:
        """Its layers on this dataset's inputs, or None if it was not resolved for them."""
        wanted = (tuple(dataset.input_shape), dataset.num_classes)
        return next((info for inputs, info in self.layers if inputs == wanted), None)
