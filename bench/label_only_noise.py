"""How the label-only attack's noise std and query count M were chosen: on SHADOW models.

    python bench/label_only_noise.py --store /tmp/label-noise-store

Trains (or reuses from ``--store``) shadow model 0 of MNIST-1D seed 0 with the fc
network at the small grid's schedule, unpruned and L1-pruned to sparsity 0.5, and
prints the AUC of the label-only score (:func:`label_only_score`) on that shadow's own
members against its non-members for a range of noise stds (M = 64) and of M (at the
chosen std). Victims are never looked at: an adversary can run exactly this.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mia_ray.attacks.label_only import label_only_score
from mia_ray.cell import build_cell, parse_args
from mia_ray.features import LABEL_NOISE_STD, label_robustness
from mia_ray.pipeline import _model_data, ensure_models, load_model
from mia_ray.store import ArtifactStore

STDS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
QUERIES = (4, 8, 16, 32, 64, 128, 256)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    args = p.parse_args()
    cell = build_cell(parse_args(["--dataset", "mnist1d", "--method", "l1_unstructured",
                                  "--sparsity", "0.5", "--shadows", "1"]))
    store = ArtifactStore(args.store)
    shadow = cell.shadows()[0]
    ensure_models([shadow], store)
    for spec in (shadow.original(), shadow):
        model = load_model(spec, store)
        data = _model_data(spec)
        x = torch.as_tensor(np.concatenate([data["train"][0], data["test"][0]])).float()
        y = torch.as_tensor(np.concatenate([data["train"][1], data["test"][1]]))
        member = np.r_[np.ones(len(data["train"][1])), np.zeros(len(data["test"][1]))]
        with torch.inference_mode():
            correct = (model(x).argmax(1) == y).numpy()
        name = "unpruned" if spec.prune is None else f"sparsity {spec.prune.sparsity:g}"
        print(f"shadow 0, {name}: gap attack AUC {roc_auc_score(member, correct):.3f}")
        for std, queries in [(s, 64) for s in STDS] + [(LABEL_NOISE_STD, q) for q in QUERIES]:
            generator = torch.Generator()
            generator.manual_seed(0)
            robust = label_robustness(model, x, y, queries=queries, std=std,
                                      generator=generator).numpy()
            auc = roc_auc_score(member, label_only_score(correct, robust))
            print(f"  std {std:<5g} M {queries:<4d} label_only AUC {auc:.3f}")


if __name__ == "__main__":
    main()
