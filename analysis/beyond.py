"""Beyond the paper: the label-only and the no-shadow adversary beside the paper's.

The paper's adversary reads the victim's full confidence vector and trains shadow
models. This section measures two weaker ones on the same victims and seeds
(docs/beyond_the_paper.md): ``label_only`` (Choquette-Choo et al. 2021), which sees only
predicted labels, in the group "label-only" with ``gap``; and ``qmia`` (Bertran et al.
2023), which trains no model of the victim's kind, in the group "no shadow models".
Each is shown beside ``conf`` and the strongest existing attack of the same victims,
with 95% t-intervals over seeds, and as paired per-seed differences from both (and
``label_only`` from ``gap``, the label-only attack without perturbed queries).

The strongest existing attack is the one with the highest mean AUC over the victims'
seeds among the attacks that are neither new one, picked on the same seeds it is
compared on: that favours it, so a new attack found above it is above it for sure.
"""

from __future__ import annotations

import pandas as pd

from analysis.load import groups, in_group, order_attacks, select
from analysis.markdown_table import markdown_table
from analysis.stats import SeedInterval, direction, format_interval, format_pm, t_interval
from mia_ray.catalog import LABEL_ONLY_ATTACKS, NO_SHADOW_ATTACKS, ONLINE_ATTACKS

NEW_ATTACKS = ("label_only", "qmia")
METRICS = (("auc", "AUC"), ("tpr_at_1pct_fpr", "TPR at 1% FPR"))


def attack_group(name: str) -> str:
    """The adversary an attack assumes, as the report groups attacks."""
    if name in LABEL_ONLY_ATTACKS:
        return "label-only"
    if name in NO_SHADOW_ATTACKS:
        return "no shadow models"
    if name in ("lira", "rmia", *ONLINE_ATTACKS):
        return "reference models"
    return "confidence vector, shadows"


def _victims(attacks: pd.DataFrame):
    """(label, rows) per victim kind: the original, then each undefended full-knowledge
    pruned (method, sparsity)."""
    original = select(attacks, knowledge="original")
    if not original.empty:
        yield "original", original
    pruned = select(attacks, knowledge="full", pruned=True, defended=False)
    for (method, sparsity), part in pruned.groupby(["method", "sparsity"], sort=True):
        yield f"{method} {sparsity:g}", part


def _per_seed(rows: pd.DataFrame, attack: str, metric: str) -> pd.Series:
    return rows[rows["attack"] == attack].groupby("seed")[metric].mean()


def _difference(rows: pd.DataFrame, attack: str, other: str, metric: str) -> SeedInterval:
    """Paired over seeds: ``attack`` minus ``other`` on the same victims."""
    d = (_per_seed(rows, attack, metric) - _per_seed(rows, other, metric)).dropna()
    return t_interval(d.to_numpy())



def _tables(rows: pd.DataFrame, victim: str) -> tuple[list[tuple], list[tuple]]:
    present = set(rows["attack"])
    new = [a for a in NEW_ATTACKS if a in present]
    existing = [a for a in present if a not in NEW_ATTACKS]
    if not new or not existing:
        return [], []
    strongest = rows[rows["attack"].isin(existing)].groupby("attack")["auc"].mean().idxmax()
    shown = order_attacks({*new, strongest} | ({"conf", "gap"} & present))
    values = [(victim, attack_group(a), a + (" (strongest existing)" if a == strongest else ""),
               *(format_pm(t_interval(_per_seed(rows, a, m).to_numpy())) for m, _ in METRICS))
              for a in shown]
    deltas = []
    for a in new:
        # label_only against gap too: what the perturbed queries add to correctness alone.
        others = ("conf", strongest, *(("gap",) if a == "label_only" else ()))
        for other in dict.fromkeys(o for o in others if o in present):
            diffs = [_difference(rows, a, other, m) for m, _ in METRICS]
            deltas.append((victim, a, other, *(
                f"{format_interval(d)} {direction(d, 'higher', 'lower')}" for d in diffs)))
    return values, deltas


def beyond_section(attacks: pd.DataFrame) -> list[str]:
    """Markdown lines of the section; none when the results have neither new attack."""
    if attacks.empty or not set(NEW_ATTACKS) & set(attacks["attack"]):
        return []
    out = ["## Beyond the paper: label-only and no-shadow adversaries", "",
           "`label_only` sees only predicted labels: the fraction of M Gaussian-perturbed "
           "queries of a sample still labelled correctly (Choquette-Choo et al. 2021), "
           "thresholded on the shadows. `qmia` trains no shadow model: it queries the "
           "victim on public non-members (the shadow half of the pool) and learns the 95% "
           "quantile of their scores given the input (Bertran et al. 2023). Its numbers do "
           "not depend on the knowledge setting. Values: mean ± the 95% t-interval's "
           "half-width over seeds. Differences: paired per seed, mean [95% CI]; "
           "\"inconclusive\" when the interval contains 0. The strongest existing attack "
           "is picked by mean AUC on these same seeds, which favours it "
           "(docs/beyond_the_paper.md).", ""]
    for group in groups(attacks):
        values, deltas = [], []
        for victim, rows in _victims(in_group(attacks, group)):
            v, d = _tables(rows, victim)
            values += v
            deltas += d
        if not values:
            continue
        labels = [label for _, label in METRICS]
        out += [f"### Label-only and no-shadow attacks ({group[0]} / {group[1]})", "",
                markdown_table(pd.DataFrame(values, columns=["victim", "group", "attack",
                                                             *labels])), "",
                markdown_table(pd.DataFrame(deltas, columns=[
                    "victim", "attack", "minus", *(f"{label} difference" for label in labels)])),
                ""]
    return out
