"""Why online LiRA wins or loses against offline: variants scored on stored signals.

    python bench/online_signals.py --storage results/online_check \
        --setups digits/small_cnn --references 16 --seeds 0,1,2,3,4

For the cells ``bench/online_vs_offline.py`` finished, reads the reference and shadow
models' stored outputs (:mod:`mia_ray.reference_signals`; the first call runs each
model once) and scores the same victim with LiRA variants that differ in one thing:

- ``online, one sigma`` and ``online, per-sample sigma``: ``lira_online`` with the
  fixed variance (its default below 64 references) and with each sample's own IN and
  OUT spreads (its default from 64);
- ``offline, reference OUTs``: offline LiRA on each sample's OUT references only, so
  the model set is the online one and the rule the offline one;
- ``offline, shadows``: ``lira`` as run (the K shadows, all OUT).

Prints the AUC and TPR@1%FPR of each, and each minus ``offline, shadows``, paired by
seed with 95% t-intervals; then, per setup, how far apart the IN and OUT references'
medians sit against their spread (the online rule weighs each sample by that gap).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
import torch
from online_vs_offline import add_check_args, check_cells

from analysis.stats import format_interval, t_interval
from mia_ray.attacks.online import _side, lira_online_scores
from mia_ray.attacks.reference import lira_offline_scores, true_class_logit
from mia_ray.evaluation import reference_outputs
from mia_ray.metrics import roc_auc, tpr_at_fpr
from mia_ray.pipeline import ensure_features
from mia_ray.results import ResultTables
from mia_ray.store import ArtifactStore


def variants(cell, store) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    feats = ensure_features(cell.victim(), cell.attacks, store)
    phi = true_class_logit(feats.prob, feats.label)
    online = reference_outputs(cell, store, online=True)
    offline = reference_outputs(cell, store, online=False)
    ref_phi = true_class_logit(online.audit_prob, feats.label)
    in_values = _side(ref_phi, online.audit_in)  # (n, N / 2): each sample's INs
    out_values = _side(ref_phi, ~online.audit_in)
    gap = np.median(in_values, axis=1) - np.median(out_values, axis=1)
    spread = np.sqrt((in_values.var(axis=1) + out_values.var(axis=1)) / 2)
    sides = {"median gap": float(np.median(gap)), "median spread": float(np.median(spread)),
             "share gap < 0": float((gap < 0).mean())}
    return {
        "online, one sigma": lira_online_scores(phi, ref_phi, online.audit_in,
                                                fixed_variance=True),
        "online, per-sample sigma": lira_online_scores(phi, ref_phi, online.audit_in,
                                                       fixed_variance=False),
        "offline, reference OUTs": lira_offline_scores(phi, out_values.T),
        "offline, shadows": lira_offline_scores(
            phi, true_class_logit(offline.audit_prob, feats.label)),
    }, feats.member, sides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_check_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    store = ArtifactStore(f"{args.storage}/artifacts")
    results = ResultTables(args.storage)
    rows, gaps = [], []
    for setup, n_refs, seed, cell in check_cells(args):
        if not results.cell_done(cell.key()):
            continue
        scores, member, sides = variants(cell, store)
        gaps.append({"setup": setup, "N": n_refs, "seed": seed, **sides})
        for name, score in scores.items():
            rows.append({"setup": setup, "N": n_refs, "seed": seed, "variant": name,
                         "auc": roc_auc(member, score),
                         "tpr_at_1pct_fpr": tpr_at_fpr(member, score, 0.01)})
    if not rows:
        print(f"error: no finished check cell under {args.storage}: run "
              "bench/online_vs_offline.py with the same options first", file=sys.stderr)
        return 2
    frame = pd.DataFrame(rows)
    out = []
    for (setup, n_refs), part in frame.groupby(["setup", "N"]):
        for metric in ("auc", "tpr_at_1pct_fpr"):
            wide = part.pivot_table(index="seed", columns="variant", values=metric)
            for name in wide.columns:
                diff = t_interval((wide[name] - wide["offline, shadows"]).to_numpy())
                out.append({"setup": setup, "N": n_refs, "metric": metric, "variant": name,
                            "mean": round(wide[name].mean(), 3),
                            "minus offline, shadows": format_interval(diff)})
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(out).to_string(index=False))
        print(pd.DataFrame(gaps).groupby(["setup", "N"])[
            ["median gap", "median spread", "share gap < 0"]].mean().round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
