"""Per-sample attack scores of a finished cell, for the audit's intervals and deltas.

The results tables hold one AUC and one TPR@1%FPR per (cell, attack); an interval
needs the scores. They are recomputed here from what the run stored (the victim's
features, the fitted attacks, and LiRA and RMIA's stored reference signals, so no model
runs again), exactly as ``evaluation.evaluate_cell`` computed them.
"""

from __future__ import annotations

import numpy as np

from mia_ray.attacks import ATTACKS_REGISTRY, make_attack
from mia_ray.evaluation import reference_outputs
from mia_ray.knowledge import CellSpec
from mia_ray.pipeline import attack_features, ensure_attacks
from mia_ray.store import ArtifactStore


def attack_scores(cell: CellSpec, attack: str, store: ArtifactStore
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(member truth, score) of one attack on the cell's victim."""
    victim = cell.victim()
    feats = attack_features(victim, cell.attacks, store)
    if ATTACKS_REGISTRY[attack].needs_reference_models:
        scorer = make_attack(attack, num_classes=cell.dataset.info.num_classes)
        score, _ = scorer.evaluate(feats, reference_outputs(cell, store,
                                                            online=scorer.online))
    else:
        score = ensure_attacks(cell.attack_fit(), store)[attack].score(feats)
    return np.asarray(feats.member, bool), np.asarray(score, np.float64)
