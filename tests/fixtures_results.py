"""A synthetic results folder, written through ``ResultTables`` like a real sweep.

The numbers follow a simple generative story whose knobs decide which of the paper's
claims the data support, so tests can build folders where a claim must hold and
folders where it must not:

- an attack's balanced accuracy is a base value per attack, raised with sparsity
  when ``pruning_leaks`` (lowered otherwise), with a bonus for SAMIA on pruned models
  when ``samia_wins`` (a penalty otherwise), small penalties for weaker adversary
  knowledge, and PPB pulling it towards 0.5 when ``ppb_works``;
- ROC points, AUC and TPR at low FPR come from the equal-variance binormal model that
  has that balanced accuracy, so the tables agree with each other;
- per-class gaps are a common gap times a class factor; ``class_spread`` scales how
  much the factors differ.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist

import numpy as np

from mia_ray.catalog import DEFAULT_ATTACKS, KNOWLEDGE, PAPER_METHODS
from mia_ray.metrics import DIVERGENCE_QUANTILES
from mia_ray.results import ResultTables

_NORMAL = NormalDist()
FINISHED = datetime(2024, 1, 1, tzinfo=timezone.utc)

BASE_ACCURACY = {"conf": 0.575, "xent": 0.56, "mentr": 0.58, "top1_conf": 0.55,
                 "nn": 0.565, "nn_top3": 0.555, "nn_cls": 0.57, "gap": 0.54, "samia": 0.585}
KNOWLEDGE_PENALTY = {"full": 0.0, "defense_unknown": 0.0, "sparsity_unknown": 0.01,
                     "method_unknown": 0.015, "pruning_unknown": 0.03}
METHOD_EFFECT = {"l1_unstructured": 0.0, "l1_structured": 0.01, "l2_structured": 0.008,
                 "slimming": 0.015, "nm_2_4": 0.005, "global_unstructured": 0.003, "imp": 0.012}


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def binormal(accuracy: float, fpr: np.ndarray) -> tuple[np.ndarray, float]:
    """TPR at ``fpr`` and the AUC of the binormal ROC whose best balanced accuracy is
    ``accuracy`` (separation d = 2 * inverse-Phi(accuracy))."""
    d = 2.0 * _NORMAL.inv_cdf(min(max(accuracy, 1e-6), 1 - 1e-6))
    tpr = np.array([_phi(d + _NORMAL.inv_cdf(f)) if f < 1 else 1.0 for f in fpr])
    return tpr, _phi(d / math.sqrt(2.0))


def write_synthetic_results(
    root: str | Path, *,
    dataset: str = "digits", arch: str = "small_cnn", seeds: Iterable[int] = (0,),
    methods: Iterable[str] = PAPER_METHODS, sparsities: Iterable[float] = (0.5, 0.7, 0.9),
    knowledge: Iterable[str] = KNOWLEDGE, strengths: Iterable[float] = (0.0, 4.0, 16.0),
    attacks: Iterable[str] = DEFAULT_ATTACKS, num_classes: int = 10, num_shadows: int = 2,
    roc_points: int = 41, pruning_leaks: bool = True, samia_wins: bool = True,
    ppb_works: bool = True, class_spread: float = 1.0, noise: float = 0.004,
    tables: Iterable[str] = ("attacks", "divergence", "roc", "models"),
    drop: Callable[[dict], bool] | None = None, zero_defense: str = "ppb",
    n_audit: int = 450, attack_epochs: int = 100,
    setting: str | None = '{"train":{"max_epochs":20}}',
) -> Path:
    """Write a grid of synthetic cells under ``root`` and return ``root``.

    Strength 0 is written as defense ``zero_defense``: ``ppb`` at strength 0 (plain
    fine-tuning), as the sweeps do, or ``none``. ``drop(coords)`` returning True skips
    that cell in every table, to simulate an unfinished grid; ``tables`` limits which
    tables are written. ``attack_epochs`` and ``setting`` are the rows' record of the
    run's settings (``CellSpec.setting``; None: a table written before it). Every attack
    row audits ``n_audit`` members and as many non-members, with bootstrap intervals of
    +-0.02 (AUC) and +-0.01 (TPR at 1%).
    """
    writer = ResultTables(str(root))
    tables = set(tables)
    fpr = np.logspace(-4, 0, roc_points)
    factors = np.linspace(1 - 0.8 * class_spread, 1 + 0.8 * class_spread, num_classes)
    factors = np.random.default_rng(7).permutation(factors)
    builds: dict[str, dict] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        cells = [("original", "none", 0.0, "none", 0.0)]
        for kn in knowledge:
            if kn == "original":
                continue
            for m in methods:
                for s in sparsities:
                    cells += [(kn, m, float(s), "ppb" if st > 0 else zero_defense, float(st))
                              for st in strengths]
        for kn, method, sparsity, defense, strength in cells:
            coords = dict(dataset=dataset, arch=arch, seed=int(seed), num_shadows=num_shadows,
                          knowledge=kn, method=method, sparsity=sparsity, defense=defense,
                          strength=strength)
            if drop is not None and drop(coords):
                continue
            cell_key = _key(coords)
            coords = {"cell_key": cell_key, **coords}
            pruned = method != "none"
            test_acc = 0.95 - (0.05 * sparsity if pruned else 0.0)
            shrink = 1.0
            if strength > 0:
                if ppb_works:
                    shrink = math.exp(-strength / 6.0)
                    test_acc -= 0.002 * math.sqrt(strength)
                else:
                    test_acc -= 0.08
            train_acc = min(1.0, test_acc + 0.04 + 0.02 * sparsity)
            victim = {"victim_key": _key("victim", dataset, arch, seed, method, sparsity,
                                         defense if strength > 0 else "none", strength),
                      "victim_train_acc": train_acc, "victim_test_acc": test_acc,
                      "victim_sparsity": sparsity, "epsilon": float("nan"),
                      "epsilon_audited": float("nan")}
            builds[victim["victim_key"]] = {**coords, **victim}
            prov = {"code_version": "synthetic", "finished_at": FINISHED}

            attack_rows, roc_rows = [], []
            for a in attacks:
                acc = BASE_ACCURACY.get(a, 0.56)
                if pruned:
                    acc += (0.12 if pruning_leaks else -0.05) * sparsity + METHOD_EFFECT[method]
                    acc -= KNOWLEDGE_PENALTY.get(kn, 0.0)
                    if a == "samia":
                        acc += 0.03 if samia_wins else -0.04
                acc = 0.5 + (acc - 0.5) * shrink + rng.normal(0.0, noise)
                tpr, auc = binormal(acc, fpr)
                t1, _ = binormal(acc, np.array([0.01, 0.001]))
                attack_rows.append({**coords, "attack": a, "accuracy": acc, "auc": auc,
                                    "tpr_at_1pct_fpr": t1[0], "tpr_at_01pct_fpr": t1[1],
                                    "tpr_at_001pct_fpr": float("nan"),
                                    "num_references": 16 if a.endswith("_online") else 0,
                                    "auc_ci_low": auc - 0.02, "auc_ci_high": auc + 0.02,
                                    "tpr_at_1pct_fpr_ci_low": max(0.0, t1[0] - 0.01),
                                    "tpr_at_1pct_fpr_ci_high": t1[0] + 0.01,
                                    "n_members": n_audit, "n_nonmembers": n_audit,
                                    "attack_epochs": attack_epochs, "setting": setting,
                                    "attack_key": _key(cell_key, a), **victim, **prov})
                roc_rows += [{**coords, "attack": a, "fpr": f, "tpr": t, **prov}
                             for f, t in zip(fpr, tpr)]

            gap = (0.03 + (0.1 * sparsity if pruning_leaks else 0.0) if pruned else 0.03)
            gap *= shrink
            div_rows = [{**coords, "class_id": c, "conf_gap": gap * factors[c],
                         "sens_gap": 5 * gap * factors[::-1][c], "n_members": 40,
                         "n_nonmembers": 40,
                         **_class_quantiles(gap * factors[c], 5 * gap * factors[::-1][c]),
                         **prov} for c in range(num_classes)]
            if "divergence" in tables:
                writer.write("divergence", cell_key, div_rows)
            if "roc" in tables:
                writer.write("roc", cell_key, roc_rows)
            # attacks last, as a real cell does: it marks the cell done.
            if "attacks" in tables:
                writer.write("attacks", cell_key, attack_rows)
    if "models" in tables:
        _write_models(writer, builds, num_shadows)
    return Path(root)


def _class_quantiles(conf_gap: float, sens_gap: float) -> dict[str, float]:
    """Percentiles whose member - non-member medians are the row's gaps."""
    row = {}
    for q in DIVERGENCE_QUANTILES:
        conf_out, sens_out = 0.5 + 0.4 * (q / 100 - 0.5), 1.0 + q / 100
        row[f"conf_nonmember_q{q:02d}"] = conf_out
        row[f"conf_member_q{q:02d}"] = conf_out + conf_gap
        row[f"sens_nonmember_q{q:02d}"] = sens_out
        row[f"sens_member_q{q:02d}"] = max(0.0, sens_out - sens_gap)
    return row


def _write_models(writer: ResultTables, builds: dict[str, dict], num_shadows: int) -> None:
    for key, b in builds.items():
        rows = []
        for role, index in [("victim", 0)] + [("shadow", i) for i in range(num_shadows)]:
            pruned = b["method"] != "none"
            rows.append({
                "model_key": key if role == "victim" else _key(key, role, index),
                "parent_key": _key("parent", b["dataset"], b["seed"], role, index)
                if pruned else None,
                "dataset": b["dataset"], "arch": b["arch"], "seed": b["seed"], "role": role,
                "index": index, "method": b["method"], "sparsity": b["sparsity"],
                "defense": b["defense"] if b["strength"] > 0 else "none",
                "strength": b["strength"], "train_acc": b["victim_train_acc"],
                "dev_acc": b["victim_test_acc"] + 0.005, "test_acc": b["victim_test_acc"],
                "measured_sparsity": b["victim_sparsity"], "epochs": 20, "best_epoch": 15,
                "seconds": 3.0, "trained_together": 6, "device": "cpu", "epsilon": None,
                "layer_sparsity": None, "rounds": 1 if pruned else 0,
                "code_version": "synthetic", "finished_at": FINISHED})
        writer.write("models", key, rows)
