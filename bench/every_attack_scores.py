"""Every attack kind's scores on one tiny cell under two checkouts, compared exactly.

    git worktree add /tmp/old 97d1d06          # before the one attack lifecycle
    (cd /tmp/old && PYTHONPATH=/tmp/old python $OLDPWD/bench/every_attack_scores.py save /tmp/a)
    python bench/every_attack_scores.py save /tmp/b
    python bench/every_attack_scores.py compare /tmp/a /tmp/b

``save`` runs one cell (a 400-sample, 3-class blobs file, fc, knowledge full,
l1_unstructured at 0.5, K = 2, N = 4 references) with a threshold, two learned, the
label-only, a pair, QMIA and the offline and online LiRA and RMIA attacks, then asks
the audit for each attack's per-sample scores (``audit.scores.attack_scores``), and
saves the cell's result rows and the scores. ``compare`` says, per attack, whether
the scores and the rows are identical (only ``finished_at`` and ``code_version`` left
out of the rows). Uses only calls both sides of issue 29's lifecycle change offer.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from mia_ray.audit.scores import attack_scores
from mia_ray.evaluation import run_cell
from mia_ray.knowledge import CellSpec
from mia_ray.resolution import resolve_dataset
from mia_ray.results import ResultTables
from mia_ray.specs import AttackSpec, PruneSpec, TrainSpec
from mia_ray.store import ArtifactStore

NAMES = ("conf", "gap", "nn", "samia", "label_only", "pair_sum", "qmia", "lira", "rmia",
         "lira_online", "rmia_online")
UNSTABLE = ("finished_at", "code_version")


def save(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    x = (rng.normal(size=(3, 8))[y] + 1.5 * rng.normal(size=(400, 8))).astype(np.float32)
    np.savez(out / "blobs.npz", features=x, labels=y)
    cell = CellSpec(dataset=resolve_dataset(str(out / "blobs.npz"), num_shadows=2),
                    arch="fc", knowledge="full", prune=PruneSpec("l1_unstructured", 0.5),
                    attacks=AttackSpec(names=NAMES, epochs=2, sens_draws=2, label_queries=8),
                    num_references=4, train=TrainSpec(max_epochs=3),
                    finetune=TrainSpec(max_epochs=1))
    store = ArtifactStore(str(out / "store"))
    rows = run_cell(cell, store, ResultTables(str(out / "results")),
                    device=torch.device("cpu"))
    kept = {r["attack"]: {k: v for k, v in r.items() if k not in UNSTABLE} for r in rows}
    (out / "rows.json").write_text(json.dumps(kept, indent=1, default=str))
    scores = {name: attack_scores(cell, name, store)[1] for name in NAMES}
    np.savez(out / "scores.npz", **scores)


def compare(first: Path, second: Path) -> None:
    rows = [json.loads((d / "rows.json").read_text()) for d in (first, second)]
    scores = [np.load(d / "scores.npz") for d in (first, second)]
    differ = 0
    for name in NAMES:
        same_scores = np.array_equal(scores[0][name], scores[1][name])
        same_row = rows[0][name] == rows[1][name]
        differ += not (same_scores and same_row)
        print(f"{name:12s} scores {'identical' if same_scores else 'DIFFER'}, "
              f"row {'identical' if same_row else 'DIFFERS'}")
    print(f"attacks not identical: {differ} of {len(NAMES)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["save"]:
        save(Path(sys.argv[2]))
    else:
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
