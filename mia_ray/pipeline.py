"""The pipeline's steps as plain functions: spec in, artifact out.

They know nothing of Ray: the same calls run in a test, in ``python -m mia_ray.cell``
and inside the engine's trainer actors. Each ``ensure_*`` function is idempotent: it
returns the stored artifact when its key is already in the store, so a rerun, a
retried trial or a second trial asking for the same build does no work twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from mia_ray.attacks import Attack, Knowledge, fit_attack_sets, learning_from, make_attack
from mia_ray.attacks.pair import PairedFeatures, pool
from mia_ray.catalog import PAIR_ATTACKS, STACK_LIMIT
from mia_ray.data import load_pool, split_for
from mia_ray.defenses import make_hook
from mia_ray.errors import SpecError
from mia_ray.features import LABEL_NOISE_STD, Features, extract_features
from mia_ray.imp_schedule import default_rewind_epoch
from mia_ray.keys import canonical_json, short_hash
from mia_ray.knowledge import AttackFitSpec
from mia_ray.models import build_model
from mia_ray.planner import cohorts
from mia_ray.predict import accuracy, pick_device
from mia_ray.provenance import code_version
from mia_ray.pruning import (
    PRUNERS,
    layer_sparsities,
    make_permanent,
    measured_sparsity,
    prune_model,
)
from mia_ray.recipe import Row, target_recipe
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec, ModelSpec, TrainSpec
from mia_ray.store import ArtifactStore
from mia_ray.training import TrainingHook, TrainReport, train

MODELS, FEATURES, ATTACK_FITS = "models", "features", "attack_fits"


def derived_seed(*parts: object) -> int:
    """A 31-bit seed from a key: independent streams per model, no global seeding."""
    digest = hashlib.sha256(canonical_json([str(p) for p in parts]).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _model_data(spec: ModelSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    pool = load_pool(spec.dataset)
    split = split_for(spec.dataset, spec.role, spec.index, len(pool.y))
    return {part: (pool.x[idx], pool.y[idx])
            for part, idx in (("train", split.train), ("dev", split.dev), ("test", split.test))}


def _restore(spec: ModelSpec, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model(spec.arch, spec.dataset, seed=0)
    model.load_state_dict(state)
    model.eval()
    return model


@dataclass
class _Build:
    """One model ready to train: its data, its start weights, seed, hook and schedule."""

    spec: ModelSpec
    model: torch.nn.Module
    data: dict[str, tuple[np.ndarray, np.ndarray]]
    seed: int
    hook: TrainingHook | None
    schedule: TrainSpec
    checkpoint_epochs: tuple[int, ...] = ()
    """Epochs whose weights an original model keeps as ``imp`` rewind points."""


def rewind_file(epoch: int) -> str:
    """The file of an original model's weights after ``epoch``, next to its weights."""
    return f"rewind_epoch{epoch}.pt"


def _prepare(spec: ModelSpec, parent_state: dict[str, torch.Tensor] | None,
             rewind_state: dict[str, torch.Tensor] | None = None,
             rewind_epochs: tuple[int, ...] = ()) -> _Build:
    """A fresh original model, or the parent's weights pruned and ready to fine-tune.

    An original keeps its weights at the default rewind epoch and at ``rewind_epochs``
    (part of its artifacts, so ``imp`` never retrains it). An ``imp`` round takes its
    mask from the parent's weights (the previous round) and its surviving weights
    from ``rewind_state``, the original's weights at the rewind epoch.
    """
    if spec.prune is None and spec.role == "victim" and spec.dataset.audited:
        # An audit's victim is the user's model, imported before the run starts.
        raise RuntimeError(f"the audited model {spec.key()} is not in the store: "
                           "python -m mia_ray.audit imports it before the run")
    data = _model_data(spec)
    seed = derived_seed(spec.key())
    if spec.prune is None:
        epochs = tuple(sorted({default_rewind_epoch(spec.train.max_epochs), *rewind_epochs}))
        return _Build(spec, build_model(spec.arch, spec.dataset, seed=seed), data, seed,
                      None, spec.train, epochs)
    if parent_state is None:
        raise ValueError("a pruned model needs its parent's weights")
    model = _restore(spec, parent_state)
    prune_model(model, spec.prune)
    if spec.prune.method == "imp":
        if rewind_state is None:
            raise ValueError("an imp round needs the original's rewind weights")
        model = _rewound(spec, model, rewind_state)
    hook = make_hook(spec.defense, train=data["train"], dev=data["dev"],
                     num_classes=spec.dataset.info.num_classes, seed=seed,
                     train_spec=spec.finetune)
    return _Build(spec, model, data, seed, hook, spec.finetune)


def _rewound(spec: ModelSpec, masked: torch.nn.Module,
             rewind_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The original's rewind weights under ``masked``'s pruning masks."""
    model = _restore(spec, rewind_state)
    pruner = PRUNERS[spec.prune.method]()
    for source, target in zip(pruner.targets(masked), pruner.targets(model), strict=True):
        torch.nn.utils.prune.custom_from_mask(target, "weight", source.weight_mask)
    return model


def _finish(build: _Build, report: TrainReport, seconds: float, device: torch.device,
            together: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fold the pruning masks in and measure the model: its ``models`` row.

    An original's rewind points ride along as ``model.rewind_points`` until
    :func:`_save_model` writes them next to its weights.
    """
    spec, model, data = build.spec, build.model, build.data
    if spec.prune is not None:
        make_permanent(model)
    model.eval()
    model.rewind_points = report.checkpoints
    row = {
        "model_key": spec.key(),
        "parent_key": spec.parent().key() if spec.prune else None,
        "dataset": spec.dataset.name,
        "arch": spec.arch,
        "seed": spec.dataset.seed,
        "role": spec.role,
        "index": spec.index,
        "method": spec.prune.method if spec.prune else "none",
        "sparsity": spec.prune.sparsity if spec.prune else 0.0,
        "defense": spec.defense.name,
        "strength": spec.defense.strength,
        "train_acc": accuracy(model, *data["train"], device=device),
        "dev_acc": accuracy(model, *data["dev"], device=device),
        "test_acc": accuracy(model, *data["test"], device=device),
        "measured_sparsity": measured_sparsity(model, spec.prune.method) if spec.prune else 0.0,
        # Where the pruning went (global_unstructured leaves layers uneven).
        "layer_sparsity": (json.dumps(layer_sparsities(model, spec.prune.method))
                           if spec.prune else None),
        # Pruning rounds behind this model: 0 unpruned, 1 one-shot, k for imp round k.
        "rounds": len(spec.prune.schedule()) if spec.prune else 0,
        "epochs": report.epochs_run,
        "best_epoch": report.best_epoch,
        "seconds": seconds,
        "trained_together": together,
        "device": str(device),
        "epsilon": float(report.extra.get("epsilon", float("nan"))),
        "code_version": code_version(),
        "finished_at": now_utc(),
    }
    return model.cpu(), row


def train_model(spec: ModelSpec, parent_state: dict[str, torch.Tensor] | None = None,
                rewind_state: dict[str, torch.Tensor] | None = None,
                *, device: torch.device | None = None
                ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train an original model, or prune ``parent_state`` and fine-tune it.

    Returns the model and its row for the ``models`` table.
    """
    return train_models([spec], [parent_state], [rewind_state], device=device)[0]


def train_models(specs: Sequence[ModelSpec],
                 parent_states: Sequence[dict[str, torch.Tensor] | None],
                 rewind_states: Sequence[dict[str, torch.Tensor] | None] | None = None,
                 *, device: torch.device | None = None, rewind_epochs: tuple[int, ...] = ()
                 ) -> list[tuple[torch.nn.Module, dict[str, Any]]]:
    """Train the models of one cohort (see :func:`planner.cohorts`) as one job.

    One call of the training loop (:func:`training.train`), which stacks the models
    unless a hook changes more than the loss; a cohort shares its architecture,
    schedule and defense. A row's ``seconds`` is its share of the job's wall time.
    """
    device = device or pick_device()
    rewind_states = rewind_states or [None] * len(specs)
    builds = [_prepare(s, p, r, rewind_epochs)
              for s, p, r in zip(specs, parent_states, rewind_states, strict=True)]
    reports = train([Row(b.model, b.data["train"], b.data["dev"], b.seed, b.hook)
                     for b in builds], target_recipe(builds[0].schedule), device=device,
                    checkpoint_epochs=builds[0].checkpoint_epochs)
    together = reports[0].extra.get("stacked", 1)
    return [_finish(b, r, r.seconds, device, together=together)
            for b, r in zip(builds, reports)]


def _save_model(spec: ModelSpec, model: torch.nn.Module, row: dict[str, Any],
                store: ArtifactStore, results: ResultTables | None) -> dict[str, Any]:
    # The models row is written before the artifact's meta: a build counts as done
    # (store.has) only once both the weights and its row are safe.
    store.put_state_dict(MODELS, spec.key(), model.state_dict())
    rewind_points = getattr(model, "rewind_points", {})
    for epoch, state in rewind_points.items():
        store.put_state_dict(MODELS, spec.key(), state, name=rewind_file(epoch))
    if results is not None:
        results.write("models", spec.key(), [row])
    meta_row = {**row, "finished_at": row["finished_at"].isoformat()}
    store.put_meta(MODELS, spec.key(), {"spec": spec.to_dict(), "row": meta_row,
                                        "rewind_epochs": sorted(rewind_points)})
    return meta_row


def ensure_models(specs: Sequence[ModelSpec], store: ArtifactStore,
                  results: ResultTables | None = None, *, device: torch.device | None = None,
                  on_train: Callable[[ModelSpec], None] | None = None,
                  stack_limit: int = STACK_LIMIT,
                  rewind_epochs: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """Build each model not yet in the store, parents first; return their ``models`` rows.

    Specs of one cohort train together in jobs of at most ``stack_limit`` models
    (1 trains every model on its own, as a one-experiment-per-command script would).
    Originals built here keep their weights at the default rewind epoch, at
    ``rewind_epochs`` and at the rewind epochs of the ``imp`` specs asked for.
    """
    if stack_limit < 1:
        raise ValueError(f"stack_limit must be >= 1, got {stack_limit}")
    todo = list({s.key(): s for s in specs if not store.has(MODELS, s.key())}.values())
    rewind_epochs = tuple(sorted({*rewind_epochs, *(
        s.prune.rewind_epoch for s in todo if s.prune and s.prune.method == "imp")}))
    parents = {s.parent().key(): s.parent() for s in todo if s.prune is not None}
    if parents:
        ensure_models(list(parents.values()), store, results, device=device,
                      on_train=on_train, stack_limit=stack_limit, rewind_epochs=rewind_epochs)
        # A spec asked for together with its own descendant was built just now.
        todo = [s for s in todo if not store.has(MODELS, s.key())]
    built: dict[str, dict[str, Any]] = {}
    for group in cohorts(todo, limit=stack_limit):
        parent_states = [store.state_dict(MODELS, s.parent().key()) if s.prune else None
                         for s in group]
        rewind_states = [_rewind_state(s, store) for s in group]
        if on_train is not None:
            for spec in group:
                on_train(spec)
        trained = train_models(group, parent_states, rewind_states, device=device,
                               rewind_epochs=rewind_epochs)
        for spec, (model, row) in zip(group, trained):
            built[spec.key()] = _save_model(spec, model, row, store, results)
    # Rows of models found in the store are read back; those built here are at hand.
    return [built[s.key()] if s.key() in built else store.meta(MODELS, s.key())["row"]
            for s in specs]


def _rewind_state(spec: ModelSpec, store: ArtifactStore) -> dict[str, torch.Tensor] | None:
    """An ``imp`` round's rewind weights, saved by its original's training."""
    if spec.prune is None or spec.prune.method != "imp":
        return None
    original, epoch = spec.original().key(), spec.prune.rewind_epoch
    saved = store.meta(MODELS, original).get("rewind_epochs", [])
    if epoch not in saved:
        # Never retrain an original behind the user's back: its key is shared by
        # every cell of the seed, and a retrained one would differ from the stored one.
        raise SpecError("rewind_epoch", epoch,
                        f"an epoch whose weights the original model {original} saved "
                        f"({saved or 'none: it was trained before imp existed'}); delete "
                        f"{store.path(MODELS, original)} to retrain it with that epoch, or "
                        "train imp cells with the originals they need in one run")
    return store.state_dict(MODELS, original, name=rewind_file(epoch))


def ensure_model(spec: ModelSpec, store: ArtifactStore, results: ResultTables | None = None,
                 *, device: torch.device | None = None,
                 on_train: Callable[[ModelSpec], None] | None = None) -> dict[str, Any]:
    """Build the model once (its parent first, if needed); return its ``models`` row."""
    return ensure_models([spec], store, results, device=device, on_train=on_train)[0]


def load_model(spec: ModelSpec, store: ArtifactStore) -> torch.nn.Module:
    return _restore(spec, store.state_dict(MODELS, spec.key()))


def label_queries(attacks: AttackSpec) -> int:
    """M, the label-only queries the features carry: 0 unless ``label_only`` is asked for."""
    return attacks.label_queries if "label_only" in attacks.names else 0


def _sensitivity_key(spec: ModelSpec, attacks: AttackSpec) -> str:
    return short_hash([spec.key(), attacks.sens_draws, attacks.sens_eps, attacks.seed])


def features_key(spec: ModelSpec, attacks: AttackSpec) -> str:
    """Features depend on the model and the sensitivity settings, and on M and the
    label-only noise when ``label_only`` is asked for (else the key is as it was)."""
    key = _sensitivity_key(spec, attacks)
    if not label_queries(attacks):
        return key
    return short_hash([key, {"label_queries": label_queries(attacks),
                             "label_noise_std": LABEL_NOISE_STD}])


def ensure_features(spec: ModelSpec, attacks: AttackSpec, store: ArtifactStore,
                    *, device: torch.device | None = None) -> Features:
    """prob / sens / label (and ``robust`` for label-only) of a model on its own members
    (train) and non-members (test).

    The sensitivity noise is seeded from the key without label-only settings, so it is
    the same whether or not ``label_only`` is asked for; the label-only perturbations
    draw from their own seed, derived from the full key (the model's key, the attack
    settings, M): each model of a fit, and the victim, gets independent draws.
    """
    key = features_key(spec, attacks)
    if store.has(FEATURES, key):
        return Features.from_arrays(store.arrays(FEATURES, key))
    data = _model_data(spec)
    feats = extract_features(load_model(spec, store), data["train"], data["test"],
                             draws=attacks.sens_draws, eps=attacks.sens_eps,
                             seed=derived_seed(_sensitivity_key(spec, attacks)),
                             device=device or pick_device(),
                             label_queries=label_queries(attacks),
                             label_seed=derived_seed(key, "label_only"))
    store.put_arrays(FEATURES, key, feats.to_arrays())
    store.put_meta(FEATURES, key, {"model_key": spec.key(), "n": len(feats.label)})
    return feats


def attack_features(spec: ModelSpec, attacks: AttackSpec, store: ArtifactStore,
                    *, device: torch.device | None = None) -> Features:
    """What the attacks of ``attacks`` read from ``spec``: its features, paired with its
    unpruned original's (:class:`PairedFeatures`) when a pair attack is named."""
    feats = ensure_features(spec, attacks, store, device=device)
    if spec.prune is None or not set(attacks.names) & set(PAIR_ATTACKS):
        return feats
    original = ensure_features(spec.original(), attacks, store, device=device)
    return PairedFeatures.pair(feats, original)


def attack_seed(fit_spec: AttackFitSpec) -> int:
    """The seed of a fit's learned attacks: their initialisations, dropout masks, shuffles.

    Derived from the fit's key, which holds its shadows' keys (so the dataset seed) and
    the attack settings (so ``AttackSpec.seed``): each dataset seed's fits draw their
    own randomness, and seeds are independent replicates of the attacks too.
    """
    return derived_seed(fit_spec.key())


def _load_fit(fit_spec: AttackFitSpec, store: ArtifactStore) -> dict[str, Attack]:
    key = fit_spec.key()
    num_classes = fit_spec.shadows[0].dataset.info.num_classes
    arrays = store.arrays(ATTACK_FITS, key)
    fitted = {}
    for name in store.meta(ATTACK_FITS, key)["attacks"]:
        attack = make_attack(name, num_classes=num_classes)
        prefix = f"{name}/"
        attack.load_state_dict({k[len(prefix):]: v for k, v in arrays.items()
                                if k.startswith(prefix)}, spec=fit_spec.attacks)
        fitted[name] = attack
    return fitted


def ensure_attack_fits(fit_specs: Sequence[AttackFitSpec], store: ArtifactStore,
                       *, device: torch.device | None = None,
                       stack: bool = True) -> list[dict[str, Attack]]:
    """Fit every attack of each fit not yet in the store, all as one job; return them all.

    Each fit holds the attacks that learn from the pooled features of its shadow models
    (the others are fitted per cell, :func:`mia_ray.evaluation.cell_attacks`). With
    ``stack`` the learned attacks' networks of one shape train together, across fits
    and within one (:func:`attacks.fit_attack_sets`), each ending where its lone fit
    would up to float rounding; ``stack=False`` fits every attack alone. A fit's
    ``seconds`` is its share of the job's wall time.
    """
    todo = list({f.key(): f for f in fit_specs if not store.has(ATTACK_FITS, f.key())}.values())
    done: dict[str, dict[str, Attack]] = {}
    if todo:
        sets = [(Knowledge(shadow=pool([attack_features(s, f.attacks, store, device=device)
                                        for s in f.shadows])),
                 f.attacks, f.shadows[0].dataset.info.num_classes) for f in todo]
        start = time.perf_counter()
        fitted = fit_attack_sets(sets, names=[learning_from("shadow", f.attacks.names)
                                              for f in todo],
                                 seeds=[attack_seed(f) for f in todo], device=device,
                                 stack=stack)
        share = (time.perf_counter() - start) / len(todo)
        for f, attacks in zip(todo, fitted):
            arrays = {f"{name}/{k}": v for name, a in attacks.items()
                      for k, v in a.state_dict().items()}
            store.put_arrays(ATTACK_FITS, f.key(), arrays)
            store.put_meta(ATTACK_FITS, f.key(), {
                "attacks": list(attacks), "seed": attack_seed(f), "seconds": share,
                "fitted_together": len(todo),
                "shadow_keys": [s.key() for s in f.shadows]})
            done[f.key()] = attacks
    return [done[f.key()] if f.key() in done else _load_fit(f, store) for f in fit_specs]


def ensure_attacks(fit_spec: AttackFitSpec, store: ArtifactStore,
                   *, device: torch.device | None = None,
                   stack: bool = True) -> dict[str, Attack]:
    """Fit every attack once on the pooled features of a set of shadow models."""
    return ensure_attack_fits([fit_spec], store, device=device, stack=stack)[0]
