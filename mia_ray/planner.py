"""Expand a grid into attack cells and the unique builds they depend on.

Many cells share builds. The original victim, shadows and reference models serve
every cell of a (dataset, arch, seed); a pruned model serves every knowledge setting that uses it;
undefended shadows serve every defense strength; an attack fit serves every cell
whose knowledge setting maps to the same shadows. The plan lists each build once,
in an order where a model comes after its parent, so running it top to bottom
trains every model exactly once. :func:`cohorts` then says which of those builds
train together as one stacked job (:mod:`mia_ray.stacking`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mia_ray.catalog import arch_info
from mia_ray.grid import GridSpec
from mia_ray.keys import canonical_json
from mia_ray.knowledge import AttackFitSpec, CellSpec
from mia_ray.specs import ModelSpec

# Assumed seconds per training epoch on one H100-class GPU at batch 128, per sample,
# used only by --dry-run's estimate (epochs x samples x this). Assumed orders of
# magnitude, not measurements of this code: the dry run labels its figure an estimate,
# and BENCHMARKS.md holds what was measured.
GPU_SECONDS_PER_SAMPLE_EPOCH = {
    "fc": 2e-6, "small_cnn": 4e-6, "resnet18": 1.2e-4, "vgg16_bn": 8e-5, "densenet121": 3e-4,
}
# Measured: CPU seconds per training sample-epoch on one core (one torch thread), by
# `python bench/bench_arch_costs.py` (BENCHMARKS.md section 10: AMD EPYC, 2 cores, shared
# machine, process CPU time). The dry run's CPU-hours use these; a GPU has not measured
# its own yet, so its figure stays assumed.
CPU_SECONDS_PER_SAMPLE_EPOCH = {
    "fc": 2.31e-05, "small_cnn": 4.35e-05, "resnet18": 1.13e-02, "vgg16_bn": 2.56e-02,
    "densenet121": 2.62e-02,
}
# Early stopping usually ends a run well before max_epochs; assume this share of it.
EXPECTED_EPOCH_SHARE = 0.4
# The cluster of cluster.yaml: up to 8 GPU workers of one GPU each, plus the head.
CLUSTER_WORKERS = 8
GPUS_PER_WORKER = 1


@dataclass
class Plan:
    cells: list[CellSpec]
    models: list[ModelSpec]
    """Unique model builds, parents before children."""
    attack_fits: list[AttackFitSpec]
    """Unique attack fits (one per distinct shadow set)."""
    naive_models: int
    """Models a one-pipeline-per-cell run would train (victim, K shadows and parents)."""
    naive_attack_fits: int
    builds_by_kind: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, float]:
        return {
            "cells": len(self.cells),
            "model_builds": len(self.models),
            "attack_fits": len(self.attack_fits),
            "naive_model_builds": self.naive_models,
            "naive_attack_fits": self.naive_attack_fits,
            **{f"builds_{k}": v for k, v in sorted(self.builds_by_kind.items())},
        }


def build_kind(spec: ModelSpec) -> str:
    """A coarse label for progress and dry-run output."""
    if spec.prune is None:
        return f"original_{spec.role}"
    return f"pruned_{spec.role}"


def plan(grid: GridSpec) -> Plan:
    cells = grid.cells()
    models: dict[str, ModelSpec] = {}
    fits: dict[str, AttackFitSpec] = {}
    naive = 0

    def add(spec: ModelSpec) -> int:
        """Add spec (and parent) to the plan; return how many models a naive run trains."""
        trained = 1
        if spec.prune is not None:
            trained += add(spec.parent())
        models.setdefault(spec.key(), spec)
        return trained

    for cell in cells:
        for spec in cell.models():
            naive += add(spec)
        fit = cell.attack_fit()
        fits.setdefault(fit.key(), fit)
    ordered = sorted(models.values(), key=lambda s: s.prune is not None)
    return Plan(cells=cells, models=ordered, attack_fits=list(fits.values()),
                naive_models=naive, naive_attack_fits=len(cells),
                builds_by_kind=Counter(build_kind(s) for s in ordered))


UNKNOWN_POOL = 10_000
"""A dataset given by path: a mid-sized pool is assumed (the estimate is labelled rough)."""


def train_samples(spec: ModelSpec) -> int:
    """Approximate train-split size (45% of half the pool), from the catalog's pool size."""
    return int((spec.dataset.info.pool or UNKNOWN_POOL) * 0.225)


def build_hours(models: Sequence[ModelSpec], seconds_per_sample_epoch: dict[str, float],
                unknown_arch: float) -> float:
    """Hours to train ``models`` one after another at the given per-sample-epoch costs
    (``unknown_arch`` for an architecture the table lacks): epochs x the expected share
    of them early stopping runs x training samples x cost. Each epoch also evaluates dev;
    the measured costs include it."""
    seconds = 0.0
    for spec in models:
        epochs = (spec.train if spec.prune is None else spec.finetune).max_epochs
        seconds += (epochs * EXPECTED_EPOCH_SHARE * train_samples(spec)
                    * seconds_per_sample_epoch.get(spec.arch, unknown_arch))
    return seconds / 3600


def gpu_hours_estimate(p: Plan) -> float:
    """Rough GPU-hours for the model builds (attack fits are small next to them), from
    the assumed ``GPU_SECONDS_PER_SAMPLE_EPOCH``."""
    return build_hours(p.models, GPU_SECONDS_PER_SAMPLE_EPOCH, 1.2e-4)


def cpu_hours_estimate(p: Plan) -> float:
    """CPU core-hours for the model builds, from the measured
    ``CPU_SECONDS_PER_SAMPLE_EPOCH`` (an unknown architecture costs as densenet121)."""
    return build_hours(p.models, CPU_SECONDS_PER_SAMPLE_EPOCH,
                       max(CPU_SECONDS_PER_SAMPLE_EPOCH.values()))


def node_hours_estimate(p: Plan, workers: int = CLUSTER_WORKERS,
                        gpus_per_worker: int = GPUS_PER_WORKER) -> tuple[float, float]:
    """(node-hours, wall-clock hours) on ``workers`` GPU nodes and a head, if the GPUs
    stay busy: the workers share the GPU-hours, the head runs for the whole sweep."""
    wall = gpu_hours_estimate(p) / (workers * gpus_per_worker)
    return wall * (workers + 1), wall
def stackable(spec: ModelSpec) -> bool:
    """Whether ``spec`` trains together with its cohort: its architecture stacks
    (``ArchInfo.stacks``) and its defense changes only the loss (decided by the training
    loop, :func:`mia_ray.defenses.stackable`; imported here so that planning a sweep
    without models to train does not load torch)."""
    from mia_ray.defenses import stackable as defense_stacks
    return arch_info(spec.arch).stacks and (spec.prune is None
                                            or defense_stacks(spec.defense.name))


def cohorts(specs: Sequence[ModelSpec], limit: int | None = None) -> list[list[ModelSpec]]:
    """Group model specs into the jobs that train them: one :func:`training.train` call each.

    Two specs stack when they differ only in role and index: same dataset, arch,
    schedules, pruning and defense (the victim, shadows and reference models of a
    cohort, or the shadows and references of one knowledge setting), and both are
    :func:`stackable`; any other spec is a job of its own. A spec listed twice is
    kept once; groups keep the input order. ``limit`` splits a group into jobs of at
    most that many models (memory on a shared GPU grows with the stack; the engine's
    default is :data:`~mia_ray.specs.STACK_LIMIT`).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    groups: dict[str, dict[str, ModelSpec]] = {}
    for spec in specs:
        if stackable(spec):
            shared = spec.key_dict()
            shared.pop("role")
            shared.pop("index")
            shared.pop("inclusion", None)  # a reference's draw is as private as its index
            group = canonical_json(shared)
        else:
            group = spec.key()
        groups.setdefault(group, {}).setdefault(spec.key(), spec)
    out = []
    for group in groups.values():
        members = list(group.values())
        size = limit or len(members)
        out += [members[i:i + size] for i in range(0, len(members), size)]
    return out
