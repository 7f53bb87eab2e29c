"""The grid: axes to sweep, and the settings every cell shares.

A :class:`GridSpec` is validated when it is built, so a bad grid fails with one
clear message before Ray starts; building one reads no file and imports nothing
(datasets by path and architectures by reference come resolved,
:mod:`mia_ray.resolution`). :meth:`GridSpec.cells` expands it, when first asked and
once, into validated :class:`~mia_ray.knowledge.CellSpec` objects, deduplicated by
key (every method and strength maps to the same ``original`` cell, for instance).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mia_ray.catalog import (
    ARCHS,
    ATTACK_STACK_LIMIT,
    ATTACKS,
    DATASETS,
    DEFAULT_ARCH,
    DEFENSES,
    IMP_ROUNDS,
    KNOWLEDGE,
    NM_SPARSITY,
    PAPER_METHODS,
    PRUNING_METHODS,
    STACK_LIMIT,
    arch_info,
)
from mia_ray.checks import (
    check_choice,
    check_float,
    check_int,
    check_online_references,
    check_prunable,
    check_references,
)
from mia_ray.errors import SpecError
from mia_ray.keys import Spec, spec_default
from mia_ray.knowledge import CellSpec
from mia_ray.specs import (
    DATASET_VALUES,
    DEFAULT_FINETUNE,
    AttackSpec,
    DatasetSpec,
    DefenseSpec,
    PruneSpec,
    TrainSpec,
    epoch_budgets,
)


@dataclass(frozen=True)
class Resources:
    """Ray resources of one worker in a role (a trainer or a trial).

    GPU fractions let several share a GPU."""

    gpus: float = 0.0
    """Fraction of a GPU per worker, in [0, 1]; 0.25 packs four workers on one GPU."""
    cpus: float = 1.0

    def check(self, role: str) -> None:
        check_float(f"{role}_gpus", self.gpus, 0.0, 1.0)
        check_float(f"{role}_cpus", self.cpus, 0.0, 64.0, low_open=True)


@dataclass(frozen=True)
class GridSpec(Spec):
    """datasets x archs x seeds x methods x sparsities x knowledge x defenses x strengths."""

    # Axes of one value default to that spec's own default (docs/grid.md, "Where each
    # default lives"); the others list the paper's values.
    datasets: tuple[str, ...] = (spec_default(DatasetSpec, "name"),)
    archs: tuple[str, ...] = ("auto",)
    """'auto' is each dataset's default; an arch that does not fit a dataset is skipped
    for it (fc for images, CNNs for tabular data), but must fit at least one."""
    seeds: tuple[int, ...] = (spec_default(DatasetSpec, "seed"),)
    methods: tuple[str, ...] = PAPER_METHODS
    sparsities: tuple[float, ...] = (0.5, 0.7, 0.9)
    knowledge: tuple[str, ...] = KNOWLEDGE
    defenses: tuple[str, ...] = ("ppb",)
    strengths: tuple[float, ...] = (0.0, 4.0, 16.0)
    num_shadows: int = spec_default(DatasetSpec, "num_shadows")
    num_references: int = spec_default(CellSpec, "num_references")
    """N reference models per cell for the online attacks (0 = none); even, <= 256."""
    attacks: AttackSpec = AttackSpec()
    train: TrainSpec = TrainSpec()
    finetune: TrainSpec = DEFAULT_FINETUNE
    imp_rounds: int = IMP_ROUNDS
    """``imp``: rounds that reach sparsity 0.9 (``mia_ray.imp_schedule``)."""
    rewind_epoch: int = 0
    """``imp``: the original training's epoch each round rewinds to; 0 is budget / 20."""
    epochs_per_dataset: bool = False
    """True: every dataset trains for the authors' budget (``DatasetInfo.epochs``: 100 on
    images, 50 on tabular sets) and fine-tunes for half; ``train`` supplies every other
    setting (lr, batch size, patience) and ``finetune`` is not used."""
    resolved: tuple[tuple[str, DatasetSpec], ...] = field(default=(), metadata={"key": False})
    """(path as given in ``datasets``, its DatasetSpec as :mod:`mia_ray.resolution` read
    it: stem, content hash, inferred shape) for each dataset given by path;
    :meth:`dataset_spec` takes them from here."""
    data_root: str = field(default=spec_default(DatasetSpec, "root"), metadata={"key": False})
    download: bool = field(default=spec_default(DatasetSpec, "download"),
                           metadata={"key": False})
    trainer: Resources = field(default=Resources(), metadata={"key": False})
    """Resources of one trainer actor (model builds and attack fits)."""
    trial: Resources = field(default=Resources(gpus=0.0, cpus=0.5), metadata={"key": False})
    """Resources of one Tune trial (victim features and attack evaluation)."""
    num_trainers: int = field(default=0, metadata={"key": False})
    """Trainer actors to start; 0 sizes the pool for the cluster the sweep can grow to
    (:mod:`mia_ray.engine.capacity`)."""
    max_gpus: float = field(default=0.0, metadata={"key": False})
    """GPUs to plan the trainer pool for (an autoscaled cluster's maximum, or less);
    0: what the cluster's autoscaler can reach, else the GPUs present."""
    stack_models: int = field(default=STACK_LIMIT, metadata={"key": False})
    """Most models of one cohort (victim and shadows sharing arch, schedule, pruning and
    defense) a trainer trains together as one vectorised job; 1 trains each alone.
    Not part of the key: stacked and one-by-one training agree up to float rounding."""
    stack_attacks: int = field(default=ATTACK_STACK_LIMIT, metadata={"key": False})
    """Most attack fits that are ready a trainer fits together as one job, their learned
    networks of one shape stacked; 1 fits every attack alone. Not part of the key, for
    the same reason."""

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("datasets", self.datasets, DATASETS),
            ("archs", self.archs, ("auto", *ARCHS)),
            ("methods", self.methods, PRUNING_METHODS),
            ("knowledge", self.knowledge, KNOWLEDGE),
            ("defenses", self.defenses, DEFENSES),
        ):
            values = tuple(values)
            object.__setattr__(self, name, values)
            if not values:
                raise SpecError(name, values, "a non-empty list of " + ", ".join(allowed))
            for v in values:
                if name == "datasets" and v not in allowed:
                    self._by_path(v)  # resolved, or refused naming both kinds of value
                elif name == "archs" and v not in allowed:
                    arch_info(v)  # a resolved reference (imports nothing), or refused
                else:
                    check_choice(name[:-1] if name.endswith("s") else name, v, allowed)
        object.__setattr__(self, "resolved", tuple(tuple(r) for r in self.resolved))
        for name in ("seeds", "sparsities", "strengths"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if not values:
                raise SpecError(name, values, "a non-empty list")
        for s in self.seeds:
            check_int("seed", s, 0)
        for s in self.sparsities:
            check_float("sparsity", s, 0.0, 1.0, high_open=True)
        check_int("imp_rounds", self.imp_rounds, 1, 64)
        check_int("rewind_epoch", self.rewind_epoch, 0)
        for method, fixed in NM_SPARSITY.items():
            # A fixed-sparsity method runs at its own sparsity and is skipped at the
            # others; a grid without that sparsity would silently drop it, so refuse.
            if method in self.methods and not any(round(s, 6) == fixed
                                                  for s in self.sparsities):
                raise SpecError("sparsities", list(self.sparsities),
                                f"a list including {fixed} when the methods include "
                                f"{method!r}, whose sparsity is fixed at {fixed}")
        check_int("num_shadows", self.num_shadows, 1, 64)
        check_references(self.num_references)
        check_int("num_trainers", self.num_trainers, 0)
        check_float("max_gpus", self.max_gpus, 0.0)
        if self.max_gpus and self.num_trainers:
            raise SpecError("max_gpus", self.max_gpus, "0 (unset) when the trainers are "
                            f"counted explicitly (num_trainers={self.num_trainers})")
        if self.max_gpus and not self.trainer.gpus:
            raise SpecError("max_gpus", self.max_gpus, "0 (unset) when trainers take no "
                            "GPU (trainer_gpus=0): give trainer_gpus > 0 too")
        check_int("stack_models", self.stack_models, 1, 64)
        check_int("stack_attacks", self.stack_attacks, 1, 64)
        self.trainer.check("trainer")
        self.trial.check("trial")
        unknown = set(self.attacks.names) - set(ATTACKS)
        if unknown:
            raise SpecError("attacks", sorted(unknown), ATTACKS)
        check_online_references(self.num_references, self.attacks.names)
        # Each value of an axis is checked above and here; a combination's cell is
        # checked as the grid expands, which happens when the cells are first asked for.
        for method, sparsity in itertools.product(self.methods, self.sparsities):
            if method not in NM_SPARSITY or round(sparsity, 6) == NM_SPARSITY[method]:
                self._prune(method, sparsity)
        for defense, strength in self.defense_points():
            _defense(defense, strength)
        self._check_rewind_epoch()
        if next(self._combinations(), None) is None:
            raise SpecError("archs", self.archs, "an architecture that fits the datasets "
                            f"{list(self.datasets)}")

    def _check_rewind_epoch(self) -> None:
        if "imp" in self.methods and self.rewind_epoch:
            for name in self.datasets:
                budget = self.budgets(name)[0].max_epochs
                if self.rewind_epoch > budget:
                    raise SpecError("rewind_epoch", self.rewind_epoch,
                                    f"an epoch of the original training, in [1, {budget}]")

    def _by_path(self, name: str) -> DatasetSpec:
        """The resolved dataset of a path in ``datasets``."""
        for given, dataset in self.resolved:
            if given == name:
                return dataset
        raise SpecError("dataset", name, DATASET_VALUES)

    def dataset_spec(self, name: str, seed: int) -> DatasetSpec:
        """The DatasetSpec of one (dataset, seed); the audit's grid adds its member set."""
        return self._dataset(name, seed=seed, num_shadows=self.num_shadows,
                             root=self.data_root, download=self.download)

    def _dataset(self, name: str, **fields: Any) -> DatasetSpec:
        if name in DATASETS:
            return DatasetSpec(name=name, **fields)
        return dataclasses.replace(self._by_path(name), **fields)

    def defense_points(self) -> list[tuple[str, float]]:
        return _defense_points(self.defenses, self.strengths)

    def budgets(self, dataset: str) -> tuple[TrainSpec, TrainSpec]:
        """The (train, finetune) specs of ``dataset``'s cells."""
        return epoch_budgets(dataset, self.train, self.finetune,
                             per_dataset=self.epochs_per_dataset)

    def archs_for(self, dataset: str | DatasetSpec) -> list[str]:
        info = dataset.info if isinstance(dataset, DatasetSpec) else DATASETS[dataset]
        name = dataset.name if isinstance(dataset, DatasetSpec) else dataset
        kind = info.kind
        out = []
        for arch in self.archs:
            arch = DEFAULT_ARCH.get(name, DEFAULT_ARCH[kind]) if arch == "auto" else arch
            if kind in arch_info(arch, info).input_kinds and arch not in out:
                out.append(arch)
        return out

    def cells(self) -> list[CellSpec]:
        """Every cell, once. Pruning methods an arch cannot take are skipped for it."""
        cached = self.__dict__.get("_cells")
        if cached is None:  # frozen: expand once, when first asked
            cached = self._expand()
            object.__setattr__(self, "_cells", cached)
        return list(cached)

    def _expand(self) -> list[CellSpec]:
        seen: dict[str, CellSpec] = {}
        for cell in self._combinations():
            seen.setdefault(cell.key(), cell)
        return list(seen.values())

    def _combinations(self) -> Iterator[CellSpec]:
        """Every combination's cell, in axis order (a cell may come more than once)."""
        for name, seed in itertools.product(self.datasets, self.seeds):
            dataset = self.dataset_spec(name, seed)
            train, finetune = self.budgets(name)
            for arch in self.archs_for(dataset):
                for method in self.methods:
                    try:
                        check_prunable(arch, method, dataset.info)
                    except SpecError:
                        continue
                    for sparsity, knowledge, (defense, strength) in itertools.product(
                            self.sparsities, self.knowledge, self.defense_points()):
                        if method in NM_SPARSITY and round(sparsity, 6) != NM_SPARSITY[method]:
                            continue  # 2:4 is sparsity 0.5 by construction
                        yield CellSpec(
                            dataset=dataset, arch=arch, knowledge=knowledge,
                            prune=self._prune(method, sparsity),
                            defense=_defense(defense, strength), attacks=self.attacks,
                            train=train, finetune=finetune,
                            num_references=self.num_references)

    def _prune(self, method: str, sparsity: float) -> PruneSpec:
        if method == "imp":
            return PruneSpec(method, sparsity, rounds=self.imp_rounds,
                             rewind_epoch=self.rewind_epoch)
        return PruneSpec(method, sparsity)

    def key_dict(self) -> dict[str, Any]:
        d = super().key_dict()
        if "imp" not in self.methods:  # grids without imp keep their keys
            d.pop("imp_rounds")
            d.pop("rewind_epoch")
        return d


def _defense_points(defenses: tuple[str, ...], strengths: tuple[float, ...]
                    ) -> list[tuple[str, float]]:
    """(defense, strength) pairs. 'none' takes no strength; DP-SGD skips sigma <= 0.

    One strengths axis serves every defense, so a grid with PPB at 0 (plain
    fine-tuning, the undefended reference) and DP-SGD at sigma 0.5, 1 is one list.
    """
    points: list[tuple[str, float]] = []
    for name in defenses:
        if name == "none":
            values = [0.0]
        elif name == "dpsgd":
            values = [s for s in strengths if s > 0]
            if not values:
                raise SpecError("strengths", strengths,
                                "at least one sigma > 0 when the defenses include 'dpsgd'")
        else:
            values = list(strengths)
        points += [(name, float(v)) for v in values if (name, float(v)) not in points]
    return points


def _defense(name: str, strength: float) -> DefenseSpec:
    # 'none' has no strength axis: every strength maps to the one undefended cell.
    return DefenseSpec(name=name, strength=0.0 if name == "none" else strength)
