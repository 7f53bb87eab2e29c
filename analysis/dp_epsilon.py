"""The defense section's DP-SGD table: the accountant's epsilon beside the audited one.

Every DP-SGD cell's attack rows carry ``epsilon`` (the RDP accountant's, for the
fine-tuning steps) and ``epsilon_audited`` (a 95% lower bound from that attack's
scores, Steinke et al.'s one-run audit; mia_ray/epsilon_bound.py). One attack is fixed
in advance for the headline, ``AUDIT_ATTACK``, so its per-seed values are each a 95%
bound; the largest over all attacks is shown beside it but is a best-of-A figure,
which no single 95% statement covers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.markdown_table import markdown_table
from analysis.stats import format_pm, t_interval

AUDIT_ATTACK = "conf"
"""The headline's attack: a threshold on the true-class confidence, the score one-run
audits use (a loss threshold ranks samples as it does)."""


def epsilon_table(attacks: pd.DataFrame) -> pd.DataFrame:
    """Per (method, sparsity, noise multiplier): accounted and audited epsilon."""
    if attacks.empty or "epsilon_audited" not in attacks.columns:
        return pd.DataFrame()
    dp = attacks[(attacks["defense"] == "dpsgd") & attacks["epsilon_audited"].notna()]
    if dp.empty:
        return pd.DataFrame()
    rows = []
    for (method, sparsity, sigma), g in dp.groupby(["method", "sparsity", "strength"]):
        per_cell = g.groupby("cell_key").agg(seed=("seed", "first"),
                                             accounted=("epsilon", "first"),
                                             best=("epsilon_audited", "max"))
        fixed = g[g["attack"] == AUDIT_ATTACK].set_index("cell_key")["epsilon_audited"]
        best_attack = g.loc[g.groupby("cell_key")["epsilon_audited"].idxmax(), "attack"]
        above = int((fixed > per_cell["accounted"].reindex(fixed.index)).sum())
        rows.append({
            "method": method, "sparsity": sparsity, "sigma": sigma,
            "accounted epsilon": format_pm(t_interval(per_cell["accounted"]), 2),
            f"audited epsilon ({AUDIT_ATTACK})": format_pm(t_interval(fixed), 2),
            f"{AUDIT_ATTACK}: min - max over seeds": (
                f"{fixed.min():.2f} - {fixed.max():.2f}" if len(fixed) else ""),
            "largest over attacks (best of A)": format_pm(t_interval(per_cell["best"]), 2),
            "attack giving it": ", ".join(sorted(set(best_attack))),
            f"seeds with {AUDIT_ATTACK}'s audited > accounted": f"{above} of {len(fixed)}",
            "seeds": len(per_cell),
        })
    return pd.DataFrame(rows)


def epsilon_section(attacks: pd.DataFrame, group: tuple[str, str]) -> list[str]:
    """Markdown lines of one (dataset, arch) group's table; none without DP-SGD cells."""
    table = epsilon_table(attacks)
    if table.empty:
        return []
    n_canaries = attacks.loc[attacks["defense"] == "dpsgd", ["n_members", "n_nonmembers"]]
    m = int(np.nanmax(n_canaries.sum(axis=1))) if not n_canaries.empty else 0
    return [f"### DP-SGD: accounted epsilon vs audited epsilon ({group[0]} / {group[1]})", "",
            "Accounted: the RDP accountant's epsilon at the defense's delta for the "
            "DP-SGD fine-tuning. Audited: the largest epsilon the attack's guesses on the "
            f"{m} audited samples reject at 95% (Steinke, Nasr and Jagielski's one-run "
            "audit, docs/method.md): a lower bound on the victim's true epsilon. Means "
            "over seeds ± the 95% t half-width. The accountant covers the fine-tuning "
            "only: the pruned model starts from an original trained WITHOUT noise on the "
            "same members, so an audited epsilon above the accounted one is the release's "
            "leak, not a broken accountant.", "", markdown_table(table), ""]
