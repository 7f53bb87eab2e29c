"""Beyond the paper: does the original beside its pruned version leak more than either?

For each pair attack (``pair_sum``, ``pair_diff``, ``pair_nn``; mia_ray/attacks/pair.py),
per (dataset, arch, method, sparsity) and seed, two paired differences:

* pair minus the pruned model alone: the pair attack against the same attack's
  single-model counterpart (``conf`` for the thresholds, which read the true-class
  confidence; ``nn_cls`` for ``pair_nn``, the same MLP on one model's outputs) in the
  same undefended full-knowledge cell;
* pair minus the original alone: against the counterpart in the seed's ``original``
  cell (the unpruned model with unpruned shadows).

The counterpart is fixed by the attack, not picked as the strongest on these data, so
nothing here is chosen by the numbers it tests. Effects are means of the per-seed
differences with Student t 95% intervals over seeds (analysis/stats.py); "more" when
the interval lies above 0, "less" when below, "inconclusive" when it straddles 0.
"""

from __future__ import annotations

import pandas as pd

from analysis.load import select
from analysis.markdown_table import markdown_table
from analysis.stats import direction, format_interval, t_interval
from mia_ray.catalog import PAIR_ATTACKS

COUNTERPART = {"pair_sum": "conf", "pair_diff": "conf", "pair_nn": "nn_cls"}
"""The single-model attack each pair attack is compared with."""
METRICS = (("auc", "AUC"), ("tpr_at_1pct_fpr", "TPR at 1% FPR"))
SEED_OF = ["dataset", "arch", "seed"]



def pair_comparisons(attacks: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (dataset, arch, method, sparsity, pair attack): the pair's mean and
    the two paired differences over seeds."""
    if attacks.empty or not attacks["attack"].isin(PAIR_ATTACKS).any():
        return pd.DataFrame()
    pruned = select(attacks, knowledge="full", pruned=True, defended=False)
    original = select(attacks, knowledge="original")
    unit = SEED_OF + ["method", "sparsity"]
    alone = pruned.set_index(unit + ["attack"])[metric]
    orig = original.groupby(SEED_OF + ["attack"])[metric].mean()
    rows = []
    for attack, single in COUNTERPART.items():
        pair = pruned[pruned["attack"] == attack]
        if pair.empty:
            continue
        for (dataset, arch, method, sparsity), g in pair.groupby(
                ["dataset", "arch", "method", "sparsity"]):
            d_pruned, d_orig, values = [], [], []
            for _, r in g.iterrows():
                values.append(r[metric])
                key = (r["dataset"], r["arch"], r["seed"])
                if (*key, method, sparsity, single) in alone.index:
                    d_pruned.append(r[metric] - alone.loc[(*key, method, sparsity, single)])
                if (*key, single) in orig.index:
                    d_orig.append(r[metric] - orig.loc[(*key, single)])
            vs_pruned, vs_orig = t_interval(d_pruned), t_interval(d_orig)
            rows.append({
                "dataset": dataset, "arch": arch, "method": method, "sparsity": sparsity,
                "pair attack": attack, "alone": single,
                "pair": format_interval(t_interval(values)),
                "pair - pruned alone": format_interval(vs_pruned),
                "more than pruned?": direction(vs_pruned, "more", "less"),
                "pair - original alone": format_interval(vs_orig),
                "more than original?": direction(vs_orig, "more", "less"),
                "seeds": len(values)})
    return pd.DataFrame(rows)


def pair_section(attacks: pd.DataFrame) -> list[str]:
    """Markdown lines of the section; none when the results have no pair attack."""
    tables = [(label, pair_comparisons(attacks, metric)) for metric, label in METRICS]
    tables = [(label, t) for label, t in tables if not t.empty]
    if not tables:
        return []
    out = ["## Beyond the paper: the original and its pruned version together", "",
           "A pair attack queries the pruned victim and its unpruned original on every "
           "sample, with shadows built the same way (docs/method.md). Per method and "
           "sparsity, its metric minus that of the same attack's single-model counterpart "
           "(`conf` for `pair_sum` and `pair_diff`, `nn_cls` for `pair_nn`), on the pruned "
           "victim alone (same cell) and on the original alone (the seed's original cell): "
           "means over seeds of the paired differences, with 95% t-intervals. \"more\": "
           "the interval lies above 0; \"less\": below; \"inconclusive\": it holds 0. "
           "Undefended victims, knowledge full.", ""]
    for label, table in tables:
        out += [f"### {label}", "", markdown_table(table), ""]
    return out
