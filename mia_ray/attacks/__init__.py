"""Membership inference attacks: fitted on shadow features, applied to a victim's.

Every attack is a subclass of :class:`Attack` registered by name with
:func:`register_attack`. An attack is fitted once on the pooled shadow
:class:`~mia_ray.features.Features` and then only reads arrays: ``score`` for the
ROC metrics and ``decide`` for balanced accuracy. Its fitted state is a dict of
numpy arrays, so it saves with ``np.savez`` and loads with ``allow_pickle=False``.

>>> sorted(ATTACKS_REGISTRY)[:3]
['conf', 'gap', 'mentr']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
import torch

from mia_ray.errors import SpecError
from mia_ray.features import Features
from mia_ray.specs import AttackSpec


class Attack:
    """Base class: one membership inference attack on fixed features.

    Subclasses set ``name`` (done by :func:`register_attack`) and implement the
    four methods below. ``score`` is higher for likelier members; ``decide`` is the
    boolean verdict the attack would commit to.
    """

    name: ClassVar[str] = ""
    needs_reference_models: ClassVar[bool] = False
    """True for attacks (LiRA, RMIA) that need per-sample reference models rather
    than pooled shadow features; :func:`fit_attacks` leaves them to the caller."""

    def __init__(self, *, num_classes: int) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes

    def fit(self, shadow: Features, spec: AttackSpec, *,
            device: torch.device | str | None = None) -> None:
        """Learn from pooled shadow features (``member`` is the training target).

        ``device`` is where learned attacks train; threshold attacks ignore it.
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
            job.attack.fit(job.shadow, job.spec, device=device)

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
    """One attack to fit: what it learns from (pooled shadow features), its spec and the
    fit's seed (a learned attack's initialisation, dropout masks and shuffle)."""

    attack: Attack
    shadow: Features
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
        cls.name = name
        ATTACKS_REGISTRY[name] = cls
        return cls
    return add


def make_attack(name: str, *, num_classes: int) -> Attack:
    """A fresh, unfitted attack by name.

    Raises:
        SpecError: no attack of that name is registered; lists the known ones.
    """
    if name not in ATTACKS_REGISTRY:
        raise SpecError("attack", name, sorted(ATTACKS_REGISTRY))
    return ATTACKS_REGISTRY[name](num_classes=num_classes)


def fit_attacks(shadow: Features, spec: AttackSpec, *, num_classes: int,
                device: torch.device | str | None = None,
                stack: bool = True) -> dict[str, Attack]:
    """Fit each attack of ``spec.names`` that works from pooled shadow features.

    Attacks that need reference models (LiRA, RMIA) are skipped: the caller runs
    those separately. The result keeps the spec's order. ``stack`` trains the learned
    attacks' MLPs together (:func:`fit_attack_sets`).

    Raises:
        SpecError: a name no attack is registered under (before any attack is fitted).
    """
    return fit_attack_sets([(shadow, spec, num_classes)], device=device, stack=stack)[0]


def fit_attack_sets(sets: Sequence[tuple[Features, AttackSpec, int]], *,
                    seeds: Sequence[int] | None = None,
                    device: torch.device | str | None = None,
                    stack: bool = True) -> list[dict[str, Attack]]:
    """:func:`fit_attacks` for several ``(shadow, spec, num_classes)`` sets in one job: the
    one entry point that fits attacks on shadow features (docs/training.md).

    Each attack becomes a :class:`FitJob`; the jobs of one implementation go to its
    class's :meth:`Attack.fit_many` in one call, so no attack kind is special-cased
    here. ``seeds``, one per set, draw each set's learned attacks' initialisations, dropout
    masks and shuffles (default: each spec's ``seed``); the pipeline passes each fit's
    :func:`mia_ray.pipeline.attack_seed`. With ``stack`` (the default) the learned
    attacks' networks of one shape train together across the sets
    (:func:`mia_ray.attacks.learned.fit_learned`), each ending where its lone fit would;
    ``stack=False`` fits every attack alone, one after another.
    """
    for _, spec, _ in sets:
        for name in spec.names:
            if name not in ATTACKS_REGISTRY:
                raise SpecError("attack", name, sorted(ATTACKS_REGISTRY))
    if seeds is None:
        seeds = [spec.seed for _, spec, _ in sets]
    if len(seeds) != len(sets):
        raise ValueError(f"need one seed per set, got {len(seeds)} for {len(sets)} sets")
    out: list[dict[str, Attack]] = []
    by_fitter: dict[type[Attack], list[FitJob]] = {}
    for (shadow, spec, num_classes), seed in zip(sets, seeds):
        fitted: dict[str, Attack] = {}
        for name in spec.names:
            cls = ATTACKS_REGISTRY[name]
            if cls.needs_reference_models:
                continue
            fitted[name] = attack = cls(num_classes=num_classes)
            # The class whose fit_many fits this attack: one call per implementation.
            fitter = next(c for c in cls.__mro__ if "fit_many" in vars(c))
            by_fitter.setdefault(fitter, []).append(FitJob(attack, shadow, spec, seed))
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
