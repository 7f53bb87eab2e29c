"""Defenses applied while a pruned model is fine-tuned, as :class:`TrainingHook` s.

A defense is a factory ``(defense_spec, **context) -> TrainingHook`` in
:data:`HOOK_FACTORIES`. ``context`` carries what some defenses need besides their
spec (the training split, the class count, a seed, the fine-tuning TrainSpec);
each factory takes what it uses and ignores the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mia_ray.defenses.advreg import AdvRegHook, make_advreg_hook
from mia_ray.defenses.dpsgd import DPSGDHook, make_dpsgd_hook
from mia_ray.defenses.ppb import PPBHook, ppb_loss
from mia_ray.errors import SpecError
from mia_ray.specs import DefenseSpec
from mia_ray.training import TrainingHook, stacks

HookFactory = Callable[..., TrainingHook]

HOOK_FACTORIES: dict[str, HookFactory] = {}
HOOK_TYPES: dict[str, type[TrainingHook]] = {}


def register_defense(name: str, factory: HookFactory,
                     hook_type: type[TrainingHook] = TrainingHook) -> None:
    """Add a defense under ``name``; ``hook_type`` is the class its factory returns.

    Raises:
        ValueError: ``name`` is already registered.
    """
    if name in HOOK_FACTORIES:
        raise ValueError(f"defense {name!r} is already registered")
    HOOK_FACTORIES[name] = factory
    HOOK_TYPES[name] = hook_type


def stackable(name: str) -> bool:
    """Whether models fine-tuned under defense ``name`` can train stacked: the training
    loop's own rule (:func:`mia_ray.training.stacks`) asked of the defense's hook."""
    return name == "none" or (name in HOOK_TYPES and stacks(HOOK_TYPES[name]))


register_defense("ppb", lambda defense, **context: PPBHook(defense.strength), PPBHook)
register_defense("advreg", make_advreg_hook, AdvRegHook)
register_defense("dpsgd", make_dpsgd_hook, DPSGDHook)


def make_hook(defense: DefenseSpec, **context: Any) -> TrainingHook | None:
    """The training hook for ``defense``, or ``None`` when it changes nothing.

    Raises:
        SpecError: the spec names a defense no factory is registered for.
    """
    if not defense.active:
        return None
    if defense.name not in HOOK_FACTORIES:
        raise SpecError("defense", defense.name, sorted(HOOK_FACTORIES))
    return HOOK_FACTORIES[defense.name](defense, **context)


__all__ = ["HOOK_FACTORIES", "AdvRegHook", "DPSGDHook", "PPBHook", "make_hook", "ppb_loss",
           "register_defense", "stackable"]
