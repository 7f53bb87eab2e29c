"""Membership inference attacks: fitted on what the adversary knows, applied to a victim's.

Every attack is a subclass of :class:`Attack` registered by name with
:func:`register_attack`, and every attack has one lifecycle (docs/training.md):

1. **knowledge**: a :class:`Knowledge` holds what the adversary has, and each attack
   class says with ``learns_from`` which part of it it fits on: the pooled shadow
   :class:`~mia_ray.features.Features` (threshold, learned, pair, label-only attacks),
   the K shadow models' stored outputs, all OUT (offline ``lira``, ``rmia``, and
   ``qmia``, which reads only the target's outputs on the same public population), or
   the N reference models' outputs, half IN (``lira_online``, ``rmia_online``);
2. **fit**: :func:`fit_attack_sets`, the one entry point, hands each attack its part;
3. **score**: ``score(target)`` for the ROC metrics and ``decide(target)`` for
   balanced accuracy read only the victim's features.

A shadow-fitted attack's state is a dict of numpy arrays, so it saves with ``np.savez``
and loads with ``allow_pickle=False``.

>>> ATTACKS_REGISTRY["lira"].learns_from, ATTACKS_REGISTRY["conf"].learns_from
('references', 'shadow')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np
import torch

from mia_ray.errors import SpecError
from mia_ray.features import Features
from mia_ray.specs import AttackSpec

if TYPE_CHECKING:
    from mia_ray.attacks.reference import ReferenceOutputs


@dataclass(frozen=True, eq=False)
class Knowledge:
    """What an adversary has to fit attacks on; ``None`` where the caller has not built it.

    Each attack fits on one field, the one its class names in ``Attack.learns_from``.
    """

    shadow: Features | None = None
    """Pooled shadow features: the shadow models' outputs on their own members and
    non-members (``member`` is what the attack learns to predict)."""
    references: ReferenceOutputs | None = None
    """Offline: the K shadow models' outputs on the audited samples and the population
    (OUT models for every audited sample), and the target's on the population."""
    online_references: ReferenceOutputs | None = None
    """Online: the N reference models' outputs, each audited sample IN for half of them
    (``ReferenceOutputs.audit_in``)."""


KNOWLEDGE = tuple(f.name for f in fields(Knowledge))
"""The parts of :class:`Knowledge`, the values ``Attack.learns_from`` may take."""


class Attack:
    """Base class: one membership inference attack on fixed features.

    Subclasses set ``name`` (done by :func:`register_attack`) and implement the
    four methods below. ``score`` is higher for likelier members; ``decide`` is the
    boolean verdict the attack would commit to.
    """

    name: ClassVar[str] = ""
    learns_from: ClassVar[str] = "shadow"
    """The field of :class:`Knowledge` that :meth:`fit` takes (one of ``KNOWLEDGE``)."""

    def __init__(self, *, num_classes: int) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes

    def fit(self, shadow: Features, spec: AttackSpec, *,
            device: torch.device | str | None = None) -> None:
        """Learn from the part of the :class:`Knowledge` that ``learns_from`` names: here
        pooled shadow features (``member`` is the training target); a reference attack's
        fit takes :class:`~mia_ray.attacks.reference.ReferenceOutputs` in their place.

        ``device`` is where learned attacks train; the others ignore it.
        """
        raise NotImplementedError

    @classmethod
    def fit_many(cls, jobs: Sequence[FitJob], *, device: torch.device | str | None = None,
                 stack: bool = True) -> None:
        """Fit each job's attack in place: the hook :func:`fit_attack_sets` calls once for
        all the jobs of the attacks that share this implementation. The default fits them
        one by one; learned attacks train their networks together
        (:func:`mia_ray.attacks.learned.fit_learned`)."""
        for job in jobs:
            job.attack.fit(getattr(job.knowledge, job.attack.learns_from), job.spec,
                           device=device)

    def score(self, target: Features) -> np.ndarray:
        """(n,) float64 membership scores, higher = likelier member (for AUC and TPR)."""
        raise NotImplementedError

    def decide(self, target: Features) -> np.ndarray:
        """(n,) bool membership verdicts (for balanced accuracy)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """The fitted state as plain numpy arrays (``np.savez``-able without pickle)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, np.ndarray], *,
                        spec: AttackSpec | None = None) -> None:
        """Restore a fitted attack from :meth:`state_dict` arrays.

        ``spec`` is the AttackSpec the attack was fitted with, for attacks whose
        rebuilt network depends on it; the arrays and ``num_classes`` suffice for
        every attack so far.
        """
        raise NotImplementedError

    def _check_features(self, features: Features, role: str) -> None:
        if features.num_classes != self.num_classes:
            raise ValueError(f"{self.name}: {role} features have {features.num_classes} "
                             f"classes, the attack was built for {self.num_classes}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes})"


@dataclass
class FitJob:
    """One attack to fit: the knowledge it learns from (its ``learns_from`` field is
    given), its spec and the fit's seed (a learned attack's initialisation, dropout masks
    and shuffle)."""

    attack: Attack
    knowledge: Knowledge
    spec: AttackSpec
    seed: int


ATTACKS_REGISTRY: dict[str, type[Attack]] = {}

A = TypeVar("A", bound=type[Attack])


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator adding an attack to :data:`ATTACKS_REGISTRY` under ``name``.

    Raises:
        ValueError: ``name`` is already registered (two classes would claim one name).
    """
    def add(cls: A) -> A:
        if name in ATTACKS_REGISTRY:
            raise ValueError(f"attack {name!r} is already registered by "
                             f"{ATTACKS_REGISTRY[name].__qualname__}")
        if cls.learns_from not in KNOWLEDGE:
            raise ValueError(f"attack {name!r} learns from {cls.learns_from!r}; "
                             f"expected one of {', '.join(KNOWLEDGE)}")
        cls.name = name
        ATTACKS_REGISTRY[name] = cls
        return cls
    return add


def attack_class(name: str) -> type[Attack]:
    """The registered class of attack ``name``.

    Raises:
        SpecError: no attack of that name is registered; lists the known ones.
    """
    if name not in ATTACKS_REGISTRY:
        raise SpecError("attack", name, sorted(ATTACKS_REGISTRY))
    return ATTACKS_REGISTRY[name]


def make_attack(name: str, *, num_classes: int) -> Attack:
    """A fresh, unfitted attack by name (:class:`SpecError` for an unknown one)."""
    return attack_class(name)(num_classes=num_classes)


def learning_from(part: str, names: Iterable[str]) -> tuple[str, ...]:
    """The attacks of ``names``, in order, that fit on ``part`` of the :class:`Knowledge`.

    >>> learning_from("shadow", ["conf", "lira", "nn"])
    ('conf', 'nn')
    """
    if part not in KNOWLEDGE:
        raise ValueError(f"part={part!r}: expected one of {', '.join(KNOWLEDGE)}")
    return tuple(n for n in names if attack_class(n).learns_from == part)


def fit_attacks(shadow: Features, spec: AttackSpec, *, num_classes: int,
                device: torch.device | str | None = None,
                stack: bool = True) -> dict[str, Attack]:
    """:func:`fit_attack_sets` for one set whose knowledge is pooled shadow features: every
    attack of ``spec.names`` is fitted, in the spec's order, and a name that learns from
    reference outputs is refused (:func:`learning_from` picks the shadow-fitted ones)."""
    return fit_attack_sets([(Knowledge(shadow=shadow), spec, num_classes)], device=device,
                           stack=stack)[0]


def fit_attack_sets(sets: Sequence[tuple[Knowledge, AttackSpec, int]], *,
                    names: Sequence[Sequence[str]] | None = None,
                    seeds: Sequence[int] | None = None,
                    device: torch.device | str | None = None,
                    stack: bool = True) -> list[dict[str, Attack]]:
    """Fit the attacks of several ``(knowledge, spec, num_classes)`` sets in one job: the
    one entry point that fits attacks of every kind (docs/training.md).

    ``names``, one sequence per set, says which of its spec's attacks to fit (default: all
    of ``spec.names``); each set's result keeps that order. Each attack becomes a
    :class:`FitJob` on its set's knowledge; the jobs of one implementation go to its
    class's :meth:`Attack.fit_many` in one call, so no attack kind is special-cased
    here. ``seeds``, one per set, draw each set's learned attacks' initialisations, dropout
    masks and shuffles (default: each spec's ``seed``); the pipeline passes each fit's
    :func:`mia_ray.pipeline.attack_seed`. With ``stack`` (the default) the learned
    attacks' networks of one shape train together across the sets
    (:func:`mia_ray.attacks.learned.fit_learned`), each ending where its lone fit would;
    ``stack=False`` fits every attack alone, one after another.

    Raises (before any attack is fitted):
        SpecError: a name no attack is registered under.
        ValueError: an attack's part of the knowledge was not given (all such named at once).
    """
    if names is None:
        names = [spec.names for _, spec, _ in sets]
    if seeds is None:
        seeds = [spec.seed for _, spec, _ in sets]
    for what, given in (("names", names), ("seed", seeds)):
        if len(given) != len(sets):
            raise ValueError(f"need one {what} per set, got {len(given)} for {len(sets)} sets")
    missing: dict[str, dict[str, None]] = {}
    for (knowledge, spec, _), chosen in zip(sets, names):
        for name in chosen:
            part = attack_class(name).learns_from
            if name not in spec.names:
                raise SpecError("attack", name, spec.names)
            if getattr(knowledge, part) is None:
                missing.setdefault(part, {})[name] = None
    if missing:
        raise ValueError("; ".join(
            f"{', '.join(attacks)} {'learns' if len(attacks) == 1 else 'learn'} from "
            f"Knowledge.{part}, which was not given" for part, attacks in missing.items()))
    out: list[dict[str, Attack]] = []
    by_fitter: dict[type[Attack], list[FitJob]] = {}
    for (knowledge, spec, num_classes), chosen, seed in zip(sets, names, seeds):
        fitted: dict[str, Attack] = {}
        for name in chosen:
            cls = ATTACKS_REGISTRY[name]
            fitted[name] = attack = cls(num_classes=num_classes)
            # The class whose fit_many fits this attack: one call per implementation.
            fitter = next(c for c in cls.__mro__ if "fit_many" in vars(c))
            by_fitter.setdefault(fitter, []).append(FitJob(attack, knowledge, spec, seed))
        out.append(fitted)
    for fitter, jobs in by_fitter.items():
        fitter.fit_many(jobs, device=device, stack=stack)
    return out


# The attack modules register themselves through the decorator above, so they are
# imported only once the registry exists.
from mia_ray.attacks import (  # noqa: E402, F401
    label_only,
    learned,
    online,
    pair,
    qmia,
    reference,
    threshold,
)
