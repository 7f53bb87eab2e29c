"""Per-sample attack scores of a finished cell, and bootstrap confidence intervals.

The results tables hold one AUC and one TPR@1%FPR per (cell, attack); an interval
needs the scores. They are recomputed here from what the run stored (the victim's
features, the fitted attacks; LiRA and RMIA's reference outputs are one forward pass
per shadow), exactly as ``evaluation.evaluate_cell`` computed them.
"""

from __future__ import annotations

import numpy as np

from mia_ray.attacks import ATTACKS_REGISTRY, make_attack
from mia_ray.evaluation import reference_outputs
from mia_ray.knowledge import CellSpec
from mia_ray.metrics import roc_auc, tpr_at_fpr
from mia_ray.pipeline import ensure_attacks, ensure_features
from mia_ray.store import ArtifactStore


def attack_scores(cell: CellSpec, attack: str, store: ArtifactStore
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(member truth, score) of one attack on the cell's victim."""
    victim = cell.victim()
    feats = ensure_features(victim, cell.attacks, store)
    if ATTACKS_REGISTRY[attack].needs_reference_models:
        scorer = make_attack(attack, num_classes=cell.dataset.info.num_classes)
        score, _ = scorer.evaluate(feats, reference_outputs(cell, store,
                                                            online=scorer.online))
    else:
        score = ensure_attacks(cell.attack_fit(), store)[attack].score(feats)
    return np.asarray(feats.member, bool), np.asarray(score, np.float64)


def bootstrap_ci(member: np.ndarray, score: np.ndarray, *, draws: int = 400,
                 level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Percentile intervals of AUC and TPR@1%FPR over stratified bootstrap resamples.

    Members and non-members are resampled separately, so every resample keeps the
    audit's class balance. Deterministic for a given seed.
    """
    member = np.asarray(member, bool)
    pos, neg = np.flatnonzero(member), np.flatnonzero(~member)
    rng = np.random.default_rng(seed)
    aucs, tprs = np.empty(draws), np.empty(draws)
    for i in range(draws):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        aucs[i] = roc_auc(member[idx], score[idx])
        tprs[i] = tpr_at_fpr(member[idx], score[idx], 0.01)
    tail = (1 - level) / 2 * 100
    lo, hi = tail, 100 - tail
    return {"auc_lo": float(np.percentile(aucs, lo)), "auc_hi": float(np.percentile(aucs, hi)),
            "tpr_lo": float(np.percentile(tprs, lo)), "tpr_hi": float(np.percentile(tprs, hi))}
