"""Frozen, validated specs: what to train, prune, defend and attack.

Each spec is pure data with a stable content key (:mod:`mia_ray.keys`). Constructing,
copying, hashing and comparing one reads no file and imports nothing: a dataset file
or an architecture by reference is read, checked and described once, beforehand, by
:mod:`mia_ray.resolution`, and the spec carries what was found.

Validation happens in ``__post_init__``: a bad value raises :class:`SpecError`
naming the field, the value and what is allowed, before anything runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mia_ray.catalog import (
    ATTACKS,
    DATASETS,
    DEFAULT_ARCH,
    DEFAULT_ATTACKS,
    DEFENSES,
    IMP_ROUNDS,
    LABEL_QUERIES,
    MAX_LABEL_QUERIES,
    MAX_REFERENCES,
    NM_SPARSITY,
    PAPER_ATTACK_EPOCHS,
    PRUNING_METHODS,
    ROLES,
    DatasetInfo,
    arch_info,
)
from mia_ray.checks import check_choice, check_float, check_int, check_prunable
from mia_ray.errors import SpecError
from mia_ray.info import AUTHORS_EPOCHS
from mia_ray.keys import KEY_VERSION, Spec, short_hash

# How reference model i draws its training half (mia_ray.data.splits.pair_halves): it
# enters a reference's key beside its index, so a new draw can never reuse an old model.
# "paired_halves" drew from the audited samples and the shadow pool (twice the victim's
# training size); "audited_halves" from the audited samples alone (the victim's size).
REFERENCE_INCLUSION = "audited_halves"

# What a dataset name that is neither built in nor resolved is told.
DATASET_VALUES = (f"one of {', '.join(repr(k) for k in DATASETS)}, or the path of an .npz, "
                  ".csv or .parquet file or a folder of class folders, read first by "
                  "mia_ray.resolution.resolve_dataset")


@dataclass(frozen=True)
class StagedPool:
    """Where a sweep's processes read a pool instead of a data root: the artifact
    store's root and the pool's staged key there (:mod:`mia_ray.data.staging`)."""

    store_root: str
    key: str


@dataclass(frozen=True)
class DatasetSpec(Spec):
    """Which data, and how it is split into victim and shadow parts."""

    name: str = "digits"
    """Dataset name, one of ``DATASETS``, or the stem of a dataset file or folder
    resolved by :func:`mia_ray.resolution.resolve_dataset` (with ``path`` set)."""
    seed: int = 0
    """Seeds the shuffle of the pool; shadow split i is redrawn with ``seed + i``."""
    num_shadows: int = 5
    """K, the number of shadow models (and shadow splits)."""
    root: str = field(default="data", metadata={"key": False})
    """Folder holding the dataset files. Not part of the key: it says where, not what."""
    download: bool = field(default=False, metadata={"key": False})
    """Allow torchvision to download CIFAR/SVHN into ``root``. Off by default."""
    label_column: str = "label"
    """CSV/Parquet datasets: the column holding the class (key only for a path)."""
    path: str = field(default="", metadata={"key": False})
    """Absolute path of a dataset given by path ('' for the named datasets)."""
    content: str = ""
    """Content hash of the file(s) at ``path``: an edited file gets new keys."""
    custom: DatasetInfo | None = field(default=None, metadata={"key": False})
    """Inferred class count and input shape of a dataset given by path."""
    members: str = ""
    """Audit mode: hash of the audited model's member indices (``members_path``)."""
    members_path: str = field(default="", metadata={"key": False})
    member_indices: np.ndarray | None = field(default=None, compare=False,
                                              metadata={"key": False, "record": False})
    """Audit mode: the sorted member indices, read from ``members_path`` once, when the
    audit was resolved; the splits are cut from these, never from the file."""
    audited: str = ""
    """Audit mode: content hash of the audited model's weights. Its victim is imported
    into the store by ``python -m mia_ray.audit``, never trained."""
    staged: StagedPool | None = field(default=None, compare=False,
                                      metadata={"key": False, "record": False})
    """Where a sweep's trainers and trials read the pool (set by the engine once the
    driver staged it); None: from ``root`` or ``path``."""

    def __post_init__(self) -> None:
        if self.path:
            if not self.content or self.custom is None:
                raise SpecError("dataset", self.path, "a dataset file resolved first "
                                "(mia_ray.resolution.resolve_dataset reads and checks it)")
        elif self.name not in DATASETS:
            raise SpecError("dataset", self.name, DATASET_VALUES)
        check_int("seed", self.seed, 0)
        check_int("num_shadows", self.num_shadows, 1, 64)
        if not isinstance(self.root, str) or not self.root:
            raise SpecError("data_root", self.root, "a non-empty folder path")

    def key_dict(self) -> dict[str, Any]:
        d = super().key_dict()
        # Fields of datasets by path and of audits stay out of the other keys, which
        # therefore did not change when they were added.
        for name in ("label_column", "content", "members", "audited"):
            if not d[name] or (name == "label_column" and not self.content):
                d.pop(name)
        return d

    @property
    def info(self) -> DatasetInfo:
        return self.custom if self.custom is not None else DATASETS[self.name]

    @property
    def pool_id(self) -> str:
        """The one identity of this dataset's pool: its key without the seed (which only
        shuffles the pool) and K (which only counts shadow splits). Staging files the
        pool under it; a by-path file's ``content`` is part of it."""
        return self._cached_hash("_pool_id", ("seed", "num_shadows", "v"))

    def key_without_shadows(self) -> str:
        """The key with K left out: what a model's key holds of its dataset, so that
        growing K reuses the models already trained."""
        return self._cached_hash("_key_without_shadows", ("num_shadows",))

    def _cached_hash(self, name: str, leave_out: tuple[str, ...]) -> str:
        cached = self.__dict__.get(name)
        if cached is None:  # frozen: every model of a grid asks, compute it once
            cached = short_hash({k: v for k, v in self.key_dict().items()
                                 if k not in leave_out})
            object.__setattr__(self, name, cached)
        return cached


@dataclass(frozen=True)
class TrainSpec(Spec):
    """Optimiser and schedule for training or fine-tuning a target/shadow model."""

    max_epochs: int = AUTHORS_EPOCHS["image"]
    """Upper bound on epochs; early stopping usually ends sooner. Default: the authors'
    budget on images (a built-in dataset gets its own: :func:`epoch_budgets`)."""
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 128
    patience: int = 5
    """Training stops after more than this many epochs in a row without a dev-accuracy
    gain (so after 6 at 5, as the authors' code); the best weights are kept."""

    def __post_init__(self) -> None:
        check_int("max_epochs", self.max_epochs, 1)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_int("batch_size", self.batch_size, 2)
        check_int("patience", self.patience, 1)

    def finetune_budget(self) -> TrainSpec:
        """The default fine-tuning after this training: the same settings for half the
        epochs, rounded down, at least 1 (the authors' prune script: ``epochs // 2``)."""
        return dataclasses.replace(self, max_epochs=max(1, self.max_epochs // 2))


DEFAULT_FINETUNE = TrainSpec().finetune_budget()
"""The fine-tuning of a spec built with no schedule given (model, cell, grid)."""


def epoch_budgets(dataset: str, train: TrainSpec, finetune: TrainSpec | None = None, *,
                  per_dataset: bool = True) -> tuple[TrainSpec, TrainSpec]:
    """The (train, finetune) specs of ``dataset``'s models: the one budget rule of the
    grid, the cell and the audit.

    ``per_dataset`` and a built-in dataset: the authors' budget for it
    (``DatasetInfo.epochs``) and its :meth:`~TrainSpec.finetune_budget`, every other
    setting from ``train``. Otherwise (a dataset given by path has no reference budget)
    ``train`` as given, and ``finetune``, by default its fine-tune budget.
    """
    if per_dataset and dataset in DATASETS:
        train = dataclasses.replace(train, max_epochs=DATASETS[dataset].epochs)
        return train, train.finetune_budget()
    return train, finetune if finetune is not None else train.finetune_budget()


@dataclass(frozen=True)
class PruneSpec(Spec):
    """One-shot pruning: which method and which fraction of the targets to remove."""

    method: str = "l1_unstructured"
    """One of ``PRUNING_METHODS``."""
    sparsity: float = 0.7
    """Fraction of targeted weights (or channels) removed, in [0, 1)."""
    rounds: int = 0
    """``imp`` only: R, the rounds that reach sparsity 0.9 (0: ``IMP_ROUNDS``); see
    :mod:`mia_ray.imp_schedule`. Always 0 for the other methods."""
    rewind_epoch: int = 0
    """``imp`` only: the original training's epoch whose weights each round rewinds to
    (0: the default for the training budget, set by :class:`ModelSpec`)."""

    def __post_init__(self) -> None:
        check_choice("method", self.method, PRUNING_METHODS)
        check_float("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        # Normalise so 0.7 and 0.70000001 from a float grid share a key.
        object.__setattr__(self, "sparsity", round(float(self.sparsity), 6))
        if self.method in NM_SPARSITY and self.sparsity != NM_SPARSITY[self.method]:
            raise SpecError("sparsity", self.sparsity,
                            f"{NM_SPARSITY[self.method]} for method {self.method!r}, whose "
                            "sparsity is fixed by its pattern (2 of every 4 weights removed)")
        if self.method == "imp":
            check_int("imp_rounds", self.rounds, 0, 64)
            check_int("rewind_epoch", self.rewind_epoch, 0)
            object.__setattr__(self, "rounds", self.rounds or IMP_ROUNDS)
        else:
            # The other methods have no rounds: one spec, one key, whatever was passed.
            object.__setattr__(self, "rounds", 0)
            object.__setattr__(self, "rewind_epoch", 0)

    def key_dict(self) -> dict[str, Any]:
        d = super().key_dict()
        if self.method != "imp":  # keys of the other methods stay as they were
            d.pop("rounds")
            d.pop("rewind_epoch")
        return d

    def schedule(self) -> tuple[float, ...]:
        """Cumulative sparsity after each pruning round: one round unless ``imp``."""
        if self.method != "imp":
            return (self.sparsity,)
        from mia_ray.imp_schedule import imp_schedule

        return imp_schedule(self.sparsity, self.rounds)


@dataclass(frozen=True)
class DefenseSpec(Spec):
    """A defense applied while the pruned model is fine-tuned."""

    name: str = "none"
    """One of ``DEFENSES``."""
    strength: float = 0.0
    """lambda for PPB, theta for AdvReg, the noise multiplier sigma for DP-SGD."""
    clip_norm: float = 1.0
    """DP-SGD per-example gradient clip norm (> 0); ignored by the other defenses."""
    delta: float = 1e-5
    """DP-SGD delta at which epsilon is reported."""
    advreg_steps: int = 1
    """AdvReg: k inference-model steps per classifier step."""

    def __post_init__(self) -> None:
        check_choice("defense", self.name, DEFENSES)
        object.__setattr__(self, "strength", float(self.strength))
        if self.name == "none":
            if self.strength != 0.0:
                raise SpecError("strength", self.strength, "0 when defense='none'")
        elif self.name == "dpsgd":
            check_float("strength", self.strength, 0.0, low_open=True)
        else:
            check_float("strength", self.strength, 0.0)
        check_float("clip_norm", self.clip_norm, 0.0, low_open=True)
        check_float("delta", self.delta, 0.0, 1.0, low_open=True, high_open=True)
        check_int("advreg_steps", self.advreg_steps, 1)

    def key_dict(self) -> dict[str, Any]:
        # Only the parameters a defense reads may change its key, so PPB(4) built
        # by two grids that differ in DP-SGD settings is still one build.
        d: dict[str, Any] = {"type": "DefenseSpec", "v": KEY_VERSION, "name": self.name,
                             "strength": self.strength}
        if self.name == "dpsgd":
            d.update(clip_norm=self.clip_norm, delta=self.delta)
        if self.name == "advreg":
            d.update(advreg_steps=self.advreg_steps)
        return d

    @property
    def active(self) -> bool:
        """False for 'none' and for PPB/AdvReg at strength 0 (plain fine-tuning)."""
        return self.name == "dpsgd" or (self.name != "none" and self.strength > 0)

    def canonical(self) -> DefenseSpec:
        """What the model is trained with: PPB or AdvReg at 0 is plain fine-tuning.

        Model builds use this, so the undefended shadows of ``defense_unknown`` and
        the PPB lambda=0 models of ``full`` are one build, not two.
        """
        return self if self.active else NO_DEFENSE


NO_DEFENSE = DefenseSpec()


@dataclass(frozen=True)
class ModelSpec(Spec):
    """One target or shadow model: the unit a trainer builds exactly once.

    An unpruned model has ``prune=None``; a pruned one names its method and
    sparsity, the defense used while fine-tuning, and derives its parent (the
    original model it was pruned from) with :meth:`parent`.
    """

    dataset: DatasetSpec
    arch: str
    role: str = "victim"
    """'victim', 'shadow' or 'reference' (an online attack's reference model)."""
    index: int = 0
    """Shadow index in [0, K), reference index in [0, MAX_REFERENCES); 0 for the victim."""
    train: TrainSpec = TrainSpec()
    prune: PruneSpec | None = None
    defense: DefenseSpec = NO_DEFENSE
    finetune: TrainSpec = DEFAULT_FINETUNE

    def __post_init__(self) -> None:
        info = arch_info(self.arch, self.dataset.info)
        check_choice("role", self.role, ROLES)
        kind = self.dataset.info.kind
        if kind not in info.input_kinds:
            raise SpecError("arch", self.arch,
                            f"an architecture for {kind} data such as "
                            f"{DEFAULT_ARCH.get(self.dataset.name, DEFAULT_ARCH[kind])!r}")
        if self.role == "victim" and self.index != 0:
            raise SpecError("index", self.index, "0 for the victim")
        if self.role == "shadow":
            check_int("index", self.index, 0, self.dataset.num_shadows - 1)
        if self.role == "reference":
            check_int("index", self.index, 0, MAX_REFERENCES - 1)
        object.__setattr__(self, "defense", self.defense.canonical())
        if self.prune is None:
            if self.defense != NO_DEFENSE:
                raise SpecError("defense", self.defense.name,
                                "'none' for an unpruned model: defenses apply while fine-tuning")
        else:
            check_prunable(self.arch, self.prune.method, self.dataset.info)
            if self.prune.method == "imp":
                self._resolve_rewind_epoch()

    def _resolve_rewind_epoch(self) -> None:
        from mia_ray.imp_schedule import default_rewind_epoch

        epoch = self.prune.rewind_epoch or default_rewind_epoch(self.train.max_epochs)
        if epoch > self.train.max_epochs:
            raise SpecError("rewind_epoch", epoch,
                            f"an epoch of the original training, in [1, {self.train.max_epochs}]")
        object.__setattr__(self, "prune", dataclasses.replace(self.prune, rewind_epoch=epoch))

    def key_dict(self) -> dict[str, Any]:
        d = super().key_dict()
        # A model is trained on its own split, which K does not change (shadow i's split
        # is drawn with seed + i): without K in its key, growing a sweep from K to K'
        # shadows reuses the victim and shadows 0..K-1 instead of retraining them.
        d["dataset"] = self.dataset.key_without_shadows()
        if self.prune is None:
            # An unpruned model's key must not depend on fine-tuning settings it never uses.
            d.pop("finetune")
        if self.role == "reference":
            # Its index and its inclusion draw, never N: reference i trains on the same
            # half for every N, so growing N from 16 to 64 trains only the 48 new ones.
            d["inclusion"] = REFERENCE_INCLUSION
        return d

    @property
    def pruned(self) -> bool:
        return self.prune is not None

    def parent(self) -> ModelSpec:
        """The model this one is pruned from: the original (unpruned) model, or for
        a later ``imp`` round the previous round (undefended: a defense acts on the
        fine-tuning of the last round only)."""
        schedule = self.prune.schedule() if self.prune is not None else ()
        if len(schedule) > 1:
            previous = dataclasses.replace(self.prune, sparsity=schedule[-2])
            return dataclasses.replace(self, prune=previous, defense=NO_DEFENSE)
        return self.original()

    def original(self) -> ModelSpec:
        """The unpruned model at the root of this one's pruning."""
        return dataclasses.replace(self, prune=None, defense=NO_DEFENSE)


@dataclass(frozen=True)
class AttackSpec(Spec):
    """Which attacks to run and how the learned ones are trained."""

    names: tuple[str, ...] = DEFAULT_ATTACKS
    epochs: int = PAPER_ATTACK_EPOCHS
    """Epochs for every learned attack (MLPs, SAMIA); LR x0.1 at 50% and 75%."""
    lr: float = 1e-3
    batch_size: int = 128
    sens_draws: int = 10
    """m, the Gaussian perturbations averaged for the sensitivity feature."""
    sens_eps: float = 1e-3
    seed: int = 0
    label_queries: int = LABEL_QUERIES
    """M, the perturbed copies of each sample whose predicted labels ``label_only``
    counts; read only when ``label_only`` is among ``names``."""

    def __post_init__(self) -> None:
        names = tuple(self.names)
        if not names:
            raise SpecError("attacks", names, "a non-empty list of " + ", ".join(ATTACKS))
        for n in names:
            check_choice("attack", n, ATTACKS)
        if len(set(names)) != len(names):
            raise SpecError("attacks", names, "each attack named once")
        object.__setattr__(self, "names", names)
        check_int("attack_epochs", self.epochs, 1)
        check_float("attack_lr", self.lr, 0.0, low_open=True)
        check_int("attack_batch_size", self.batch_size, 2)
        check_int("sens_draws", self.sens_draws, 1)
        check_float("sens_eps", self.sens_eps, 0.0, low_open=True)
        check_int("attack_seed", self.seed, 0)
        check_int("label_queries", self.label_queries, 1, MAX_LABEL_QUERIES)

    def key_dict(self) -> dict[str, Any]:
        d = super().key_dict()
        if "label_only" not in self.names:
            d.pop("label_queries")  # specs without the attack keep their keys
        return d
