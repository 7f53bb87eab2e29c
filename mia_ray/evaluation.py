"""Evaluate one cell: attack its victim with the fitted attacks and write its rows.

The last step of the pipeline (:mod:`mia_ray.pipeline` builds what it reads): the
victim's features and the cell's fitted attacks (:func:`cell_attacks`: the stored fit
of its shadow set, and the attacks fitted on the shadow or reference models' stored
outputs) go in; the cell's ``attacks``, ``roc`` and ``divergence`` rows come out.
:func:`run_cell` runs a whole cell in one process, builds included.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import torch

from mia_ray.attacks import Attack, Knowledge, fit_attack_sets, learning_from
from mia_ray.attacks.qmia import input_representation
from mia_ray.attacks.reference import ReferenceOutputs
from mia_ray.catalog import STACK_LIMIT
from mia_ray.data import load_pool, split_for
from mia_ray.epsilon_bound import audited_epsilon
from mia_ray.knowledge import CellSpec
from mia_ray.metrics import (
    attack_metrics,
    bootstrap_intervals,
    class_gaps,
    class_quantiles,
    roc_points,
)
from mia_ray.pipeline import (
    MODELS,
    attack_features,
    derived_seed,
    ensure_attacks,
    ensure_models,
    now_utc,
)
from mia_ray.predict import pick_device
from mia_ray.provenance import code_version
from mia_ray.reference_signals import model_signals
from mia_ray.results import ResultTables
from mia_ray.specs import ModelSpec
from mia_ray.store import ArtifactStore


def _inputs_of(x: np.ndarray, index: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """:func:`input_representation` of ``x[index]``, a chunk at a time."""
    return np.concatenate([input_representation(x[index[i:i + chunk]])
                           for i in range(0, len(index), chunk)])


def reference_outputs(cell: CellSpec, store: ArtifactStore,
                      *, device: torch.device | None = None,
                      online: bool = False) -> ReferenceOutputs:
    """What LiRA and RMIA need besides the victim's features.

    Offline (``lira``, ``rmia``) the reference models are the cell's K shadow models
    (what the adversary trained under its knowledge setting). They never saw the victim
    half of the pool, so they are OUT models for every audited sample. Online
    (``lira_online``, ``rmia_online``) they are the cell's N reference models, each
    trained on a half of the audited samples, as many samples as the victim
    (:func:`mia_ray.data.splits.inclusion`); ``audit_in`` says which. Audited samples are the
    victim's train then test split, the order of its :class:`Features`. Population
    samples are the whole shadow pool, which the victim never saw; a reference counts
    as OUT for one of them unless it trained on it. The inputs of both sets come along
    (:func:`~mia_ray.attacks.qmia.input_representation`) for ``qmia``, which queries the
    target on the population as its public non-member data.

    Every model's outputs on a sample set are stored once
    (:mod:`mia_ray.reference_signals`): a second evaluation runs no forward pass, and
    growing N runs only the new references.
    """
    device = device or pick_device()
    pool = load_pool(cell.dataset)
    n = len(pool.y)
    victim = cell.victim()
    victim_split = split_for(victim.dataset, victim.role, victim.index, n)
    audit = np.concatenate([victim_split.train, victim_split.test])
    models = cell.references() if online else cell.shadows()
    splits = [split_for(s.dataset, s.role, s.index, n) for s in models]
    first = split_for(victim.dataset, "shadow", 0, n)
    population = np.sort(np.concatenate([first.train, first.dev, first.test]))
    on_audit = [model_signals(spec, store, pool.x, audit, device=device, train=split.train)
                for spec, split in zip(models, splits)]
    on_population = [model_signals(spec, store, pool.x, population, device=device)["prob"]
                     for spec in models]
    return ReferenceOutputs(
        audit_prob=np.stack([row["prob"] for row in on_audit]),
        population_prob=np.stack(on_population),
        population_label=pool.y[population],
        population_out=np.stack([~np.isin(population, split.train) for split in splits]),
        target_population_prob=model_signals(victim, store, pool.x, population,
                                             device=device)["prob"],
        audit_in=np.stack([row["in_mask"] for row in on_audit]) if online else None,
        audit_inputs=_inputs_of(pool.x, audit),
        population_inputs=_inputs_of(pool.x, population),
    )


REFERENCE_PARTS = {"references": False, "online_references": True}
"""The parts of the :class:`Knowledge` built from stored reference signals, each with
the ``online`` flag of :func:`reference_outputs` that builds it."""


def cell_knowledge(cell: CellSpec, store: ArtifactStore, parts: Collection[str], *,
                   device: torch.device | None = None) -> Knowledge:
    """The reference parts of what the cell's adversary knows, only the ``parts`` named
    (each a key of ``REFERENCE_PARTS``); the pooled shadow features are the stored attack
    fit's (:func:`mia_ray.pipeline.ensure_attacks`)."""
    return Knowledge(**{part: reference_outputs(cell, store, device=device,
                                                online=REFERENCE_PARTS[part])
                        for part in parts})


def cell_attacks(cell: CellSpec, store: ArtifactStore, *, names: Sequence[str] | None = None,
                 device: torch.device | None = None, stack: bool = True
                 ) -> dict[str, Attack]:
    """The cell's attacks (or those of ``names``) fitted, by name in that order: the one
    way the evaluation and the audit get an attack of any kind.

    The attacks that learn from shadow features come from the cell's stored attack fit,
    which cells with the same shadows share and the engine stacks across fits (``stack``:
    the learned ones train together when it is fitted here). The others are fitted now
    through :func:`~mia_ray.attacks.fit_attack_sets` on the reference outputs built from
    stored signals, only for the parts of the knowledge they need.
    """
    names = tuple(cell.attacks.names if names is None else names)
    from_shadow = learning_from("shadow", names)
    fitted = (ensure_attacks(cell.attack_fit(), store, device=device, stack=stack)
              if from_shadow else {})
    rest = [n for n in names if n not in from_shadow]
    if rest:
        parts = [part for part in REFERENCE_PARTS if learning_from(part, rest)]
        knowledge = cell_knowledge(cell, store, parts, device=device)
        (more,) = fit_attack_sets([(knowledge, cell.attacks, cell.dataset.info.num_classes)],
                                  names=[rest], device=device, stack=stack)
        fitted = {**fitted, **more}
    return {name: fitted[name] for name in names}


def evaluate_cell(cell: CellSpec, store: ArtifactStore, results: ResultTables,
                  *, device: torch.device | None = None,
                  stack_attacks: bool = True) -> list[dict[str, Any]]:
    """Attack the victim with the cell's fitted attacks (:func:`cell_attacks`) and write
    the cell's result files.

    Needs the victim model and the attack fit in the store. The ``attacks`` file is
    written last: its presence marks the cell as done.
    """
    victim = cell.victim()
    victim_row = store.meta(MODELS, victim.key())["row"]
    fit_spec = cell.attack_fit()
    attacks = cell_attacks(cell, store, device=device, stack=stack_attacks)
    feats = attack_features(victim, cell.attacks, store, device=device)
    num_classes = cell.dataset.info.num_classes
    coords = cell.coordinates()
    finished = now_utc()
    base = {**coords, "code_version": code_version(), "finished_at": finished}
    attack_rows, roc_rows = [], []
    for name, attack in attacks.items():
        score, decision = attack.score(feats), attack.decide(feats)
        metrics = attack_metrics(feats.member, score, decision)
        attack_rows.append({
            **base, "attack": name,
            "accuracy": metrics["accuracy"], "auc": metrics["auc"],
            "tpr_at_1pct_fpr": metrics["tpr_at_1pct_fpr"],
            "tpr_at_01pct_fpr": metrics["tpr_at_0.1pct_fpr"],
            "tpr_at_001pct_fpr": metrics["tpr_at_0.01pct_fpr"],
            "num_references": cell.num_references,
            **bootstrap_intervals(feats.member, score, seed=derived_seed(cell.key(), name)),
            "n_members": int(feats.member.sum()),
            "n_nonmembers": int((~feats.member).sum()),
            "attack_epochs": cell.attacks.epochs,
            "attack_key": fit_spec.key(),
            "setting": cell.setting(),
            "victim_key": victim.key(),
            "victim_train_acc": victim_row["train_acc"],
            "victim_test_acc": victim_row["test_acc"],
            "victim_sparsity": victim_row["measured_sparsity"],
            "epsilon": victim_row.get("epsilon", float("nan")),
            "epsilon_audited": _audited_epsilon(cell, name, feats.member, score),
        })
        fprs, tprs = roc_points(feats.member, score)
        roc_rows += [{**base, "attack": name, "fpr": float(f), "tpr": float(t)}
                     for f, t in zip(fprs, tprs)]
    gaps = class_gaps(feats, num_classes)
    quantiles = class_quantiles(feats, num_classes)
    div_rows = [{**base, "class_id": c,
                 "conf_gap": _nan_to_none(gaps["conf_gap"][c]),
                 "sens_gap": _nan_to_none(gaps["sens_gap"][c]),
                 "n_members": int(gaps["n_members"][c]),
                 "n_nonmembers": int(gaps["n_nonmembers"][c]),
                 **{name: _nan_to_none(v[c]) for name, v in quantiles.items()}}
                for c in range(num_classes)]
    results.write("divergence", cell.key(), div_rows)
    results.write("roc", cell.key(), roc_rows)
    results.write("attacks", cell.key(), attack_rows)
    return attack_rows


def _audited_epsilon(cell: CellSpec, attack: str, member: np.ndarray,
                     score: np.ndarray) -> float:
    """The epsilon ``score`` proves for a DP-SGD victim, at the accountant's delta; NaN
    for every other victim (no epsilon is claimed to check)."""
    if cell.defense.name != "dpsgd":
        return float("nan")
    return audited_epsilon(member, score, cell.defense.delta,
                           seed=derived_seed(cell.key(), attack, "epsilon_audited"))


def _nan_to_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def run_cell(cell: CellSpec, store: ArtifactStore, results: ResultTables,
             *, device: torch.device | None = None,
             on_train: Callable[[ModelSpec], None] | None = None,
             stack_limit: int = STACK_LIMIT, stack_attacks: bool = True
             ) -> list[dict[str, Any]]:
    """Everything one cell needs, in this process: models, attack fit, evaluation.

    ``stack_attacks=False`` fits each learned attack alone (the reference path).
    """
    ensure_models(list(cell.models()), store, results, device=device,
                  on_train=on_train, stack_limit=stack_limit)
    return evaluate_cell(cell, store, results, device=device, stack_attacks=stack_attacks)
