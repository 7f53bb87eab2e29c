"""Per-sample attack scores of a finished cell, for the audit's intervals and deltas.

The results tables hold one AUC and one TPR@1%FPR per (cell, attack); an interval
needs the scores. They are recomputed here from what the run stored (the victim's
features, the fitted attacks, and the stored reference signals that the reference
attacks are fitted on, so no model runs again), through the one function the
evaluation gets its attacks from (``evaluation.cell_attacks``).
"""

from __future__ import annotations

import numpy as np

from mia_ray.evaluation import cell_attacks
from mia_ray.knowledge import CellSpec
from mia_ray.pipeline import attack_features
from mia_ray.store import ArtifactStore


def attack_scores(cell: CellSpec, attack: str, store: ArtifactStore
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(member truth, score) of one attack on the cell's victim."""
    feats = attack_features(cell.victim(), cell.attacks, store)
    score = cell_attacks(cell, store, names=(attack,))[attack].score(feats)
    return np.asarray(feats.member, bool), np.asarray(score, np.float64)
