"""Adversary knowledge: how the shadow pipeline is derived from the victim's.

A cell of the grid is one victim (dataset, architecture, pruning, defense) attacked
by an adversary with one knowledge setting. The setting decides which models the
adversary trains as shadows (docs/method.md, "Adversary knowledge"):

=================  ===================================================================
original           unpruned shadows, attacking the unpruned victim
full               shadows pruned with the victim's method, sparsity and defense
defense_unknown    the victim's method and sparsity, without the defense
sparsity_unknown   the victim's method at an assumed sparsity (0.7) and its defense
method_unknown     l1_unstructured at the victim's sparsity, with its defense
pruning_unknown    unpruned shadows, attacking the pruned victim
=================  ===================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mia_ray.catalog import DEFAULT_ARCH, KNOWLEDGE, NM_SPARSITY, PAIR_ATTACKS, arch_info
from mia_ray.checks import (
    check_choice,
    check_float,
    check_online_references,
    check_prunable,
    check_references,
)
from mia_ray.errors import SpecError
from mia_ray.keys import KEY_VERSION, Spec, canonical_json, key_fields
from mia_ray.specs import (
    DEFAULT_FINETUNE,
    NO_DEFENSE,
    AttackSpec,
    DatasetSpec,
    DefenseSpec,
    ModelSpec,
    PruneSpec,
    TrainSpec,
)

ASSUMED_SPARSITY = 0.7
FALLBACK_METHOD = "l1_unstructured"


def shadow_pipeline(knowledge: str, prune: PruneSpec | None,
                    defense: DefenseSpec, assumed_sparsity: float = ASSUMED_SPARSITY
                    ) -> tuple[PruneSpec | None, DefenseSpec]:
    """The (pruning, defense) the adversary's shadows get, given the victim's."""
    check_choice("knowledge", knowledge, KNOWLEDGE)
    if knowledge in ("original", "pruning_unknown") or prune is None:
        return None, NO_DEFENSE
    if knowledge == "full":
        return prune, defense
    if knowledge == "defense_unknown":
        return prune, NO_DEFENSE
    if knowledge == "sparsity_unknown":
        if prune.method in NM_SPARSITY:  # the pattern fixes the sparsity: nothing to assume
            return prune, defense
        return dataclasses.replace(prune, sparsity=assumed_sparsity), defense
    # method_unknown
    return PruneSpec(FALLBACK_METHOD, prune.sparsity), defense


@dataclass(frozen=True)
class CellSpec(Spec):
    """One cell of the grid: one victim, one adversary, one attack set.

    For ``knowledge='original'`` the victim is the unpruned model whatever pruning
    and defense were asked for; the cell is canonicalised so that every method and
    strength of a grid maps to the same original cell. Likewise a defense at a
    strength that changes nothing (PPB or AdvReg at 0) is the undefended cell, and
    ``defense_unknown`` against an undefended victim is the ``full`` cell. The pair
    attacks (``PAIR_ATTACKS``) need pruned shadows beside their originals: a cell whose
    shadows are unpruned (``original``, ``pruning_unknown``) leaves them out, so a
    grid's original cell is the one it would be without them.
    """

    dataset: DatasetSpec = DatasetSpec()
    arch: str = ""
    """Architecture; '' picks the dataset's default (small_cnn for digits)."""
    knowledge: str = "full"
    prune: PruneSpec | None = PruneSpec()
    defense: DefenseSpec = NO_DEFENSE
    attacks: AttackSpec = AttackSpec()
    train: TrainSpec = TrainSpec()
    finetune: TrainSpec = DEFAULT_FINETUNE
    assumed_sparsity: float = ASSUMED_SPARSITY
    num_references: int = 0
    """N, the reference models of the online attacks (``lira_online``, ``rmia_online``);
    0 = none. They go through the shadows' pipeline (:meth:`references`)."""

    def __post_init__(self) -> None:
        if not self.arch:
            default = DEFAULT_ARCH.get(self.dataset.name, DEFAULT_ARCH[self.dataset.info.kind])
            object.__setattr__(self, "arch", default)
        arch_info(self.arch, self.dataset.info)
        check_choice("knowledge", self.knowledge, KNOWLEDGE)
        check_float("assumed_sparsity", self.assumed_sparsity, 0.0, 1.0, high_open=True)
        if self.knowledge == "original":
            object.__setattr__(self, "prune", None)
            object.__setattr__(self, "defense", NO_DEFENSE)
        elif self.prune is None:
            raise SpecError("method", None,
                            f"a pruning method for knowledge={self.knowledge!r}; "
                            "only 'original' attacks the unpruned model")
        else:
            check_prunable(self.arch, self.prune.method, self.dataset.info)
            # PPB or AdvReg at strength 0 is plain fine-tuning: the undefended victim,
            # one cell under the name 'none' whichever defense axis produced it.
            object.__setattr__(self, "defense", self.defense.canonical())
            if self.knowledge == "defense_unknown" and not self.defense.active:
                # Nothing to be unaware of: against an undefended victim this adversary
                # trains exactly the full-knowledge shadows, so it is that cell.
                object.__setattr__(self, "knowledge", "full")
            if self.knowledge == "method_unknown":
                check_prunable(self.arch, FALLBACK_METHOD, self.dataset.info)
        self._drop_pair_attacks()
        check_references(self.num_references)
        check_online_references(self.num_references, self.attacks.names)
        # Build the model lists now so a bad combination fails at spec time.
        self.victim()
        self.shadows()
        self.references()

    def _drop_pair_attacks(self) -> None:
        if self.knowledge not in ("original", "pruning_unknown"):
            return
        kept = tuple(a for a in self.attacks.names if a not in PAIR_ATTACKS)
        if not kept:
            raise SpecError("attacks", self.attacks.names,
                            f"an attack other than {', '.join(PAIR_ATTACKS)} for knowledge "
                            f"{self.knowledge!r}, whose shadows are unpruned: a pair attack "
                            "needs pruned shadows beside their originals")
        if kept != self.attacks.names:
            object.__setattr__(self, "attacks", dataclasses.replace(self.attacks, names=kept))

    def key_dict(self) -> dict[str, Any]:
        d = super().key_dict()
        if not d["num_references"]:
            d.pop("num_references")  # cells without references kept their keys
        # Each attack fit now draws its randomness from its own key (not AttackSpec.seed
        # for every dataset seed): a store's cells evaluated the old way are evaluated
        # again, not reused by resume (models are reused; analysis keeps the newest).
        d["attack_seeds"] = "by-fit-key"
        return d

    def setting(self) -> str:
        """The cell's settings beside its grid coordinates, as canonical JSON: training
        and fine-tuning budgets, the attacks and their schedule, imp's rounds and rewind
        epoch, the assumed sparsity, N references. Two cells at one grid point with the
        same setting are one experiment (a newer key version or seeding of it); with
        different settings they are two (``analysis.load.superseded_cells``)."""
        prune = key_fields(self.prune) if self.prune is not None else {}
        return canonical_json({
            "train": key_fields(self.train), "finetune": key_fields(self.finetune),
            "attacks": key_fields(self.attacks),
            "prune": {k: v for k, v in prune.items() if k not in ("method", "sparsity")},
            "assumed_sparsity": self.assumed_sparsity, "num_references": self.num_references})

    def _model(self, role: str, index: int, prune: PruneSpec | None,
               defense: DefenseSpec) -> ModelSpec:
        return ModelSpec(dataset=self.dataset, arch=self.arch, role=role, index=index,
                         train=self.train, prune=prune, defense=defense,
                         finetune=self.finetune)

    def victim(self) -> ModelSpec:
        if "_victim" not in self.__dict__:  # frozen: derive once, keys stay cached
            object.__setattr__(self, "_victim",
                               self._model("victim", 0, self.prune, self.defense))
        return self.__dict__["_victim"]

    def shadows(self) -> tuple[ModelSpec, ...]:
        if "_shadows" not in self.__dict__:
            prune, defense = shadow_pipeline(self.knowledge, self.prune, self.defense,
                                             self.assumed_sparsity)
            object.__setattr__(self, "_shadows", tuple(
                self._model("shadow", i, prune, defense)
                for i in range(self.dataset.num_shadows)))
        return self.__dict__["_shadows"]

    def references(self) -> tuple[ModelSpec, ...]:
        """The N reference models of the online attacks, 0..N-1.

        Each trains on its own half of the reference population
        (:func:`mia_ray.data.splits.pair_halves`) and then goes through the shadows' pipeline
        under this cell's knowledge setting: ``full`` prunes, fine-tunes and defends
        them as the victim was; ``original`` and ``pruning_unknown`` keep them unpruned,
        one set shared by every cell of (dataset, arch, seed).
        """
        if "_references" not in self.__dict__:
            prune, defense = shadow_pipeline(self.knowledge, self.prune, self.defense,
                                             self.assumed_sparsity)
            object.__setattr__(self, "_references", tuple(
                self._model("reference", i, prune, defense)
                for i in range(self.num_references)))
        return self.__dict__["_references"]

    def models(self) -> tuple[ModelSpec, ...]:
        """Every model this cell attacks with or attacks: victim, shadows, references."""
        return (self.victim(), *self.shadows(), *self.references())

    def attack_fit(self) -> AttackFitSpec:
        """The attack models this cell uses: shared by every cell with the same shadows."""
        return AttackFitSpec(shadows=self.shadows(), attacks=self.attacks)

    def coordinates(self) -> dict[str, Any]:
        """Flat columns that every result row of this cell carries."""
        return {
            "cell_key": self.key(),
            "dataset": self.dataset.name,
            "arch": self.arch,
            "seed": self.dataset.seed,
            "num_shadows": self.dataset.num_shadows,
            "knowledge": self.knowledge,
            "method": self.prune.method if self.prune else "none",
            "sparsity": self.prune.sparsity if self.prune else 0.0,
            "defense": self.defense.name,
            "strength": self.defense.strength,
        }

    def with_(self, **changes: Any) -> CellSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AttackFitSpec(Spec):
    """Attack models fitted on the pooled outputs of one set of shadow models.

    Its key is the list of its members' model keys (and the attack settings): K enters
    only as the length of that list, so the fits of K and K' shadows differ while
    their shared members are one build each. ``"seeded": "by-key"`` marks fits whose
    learned attacks draw their randomness from this key (``pipeline.attack_seed``);
    fits stored before that shared one seed across dataset seeds and are not reused.
    """

    shadows: tuple[ModelSpec, ...]
    attacks: AttackSpec

    def key_dict(self) -> dict[str, Any]:
        return {"type": "AttackFitSpec", "v": KEY_VERSION, "seeded": "by-key",
                "shadows": [s.key() for s in self.shadows], "attacks": self.attacks.key()}
