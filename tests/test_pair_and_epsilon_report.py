"""The report's pair-versus-single answer and its accounted-vs-audited epsilon table,
on hand-made result rows with known differences."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.dp_epsilon import epsilon_section, epsilon_table
from analysis.pair import pair_comparisons, pair_section
from analysis.stats import t_interval


def _row(seed, knowledge, attack, auc, *, sparsity=0.5, defense="none", strength=0.0,
         epsilon=math.nan, audited=math.nan):
    method = "none" if knowledge == "original" else "l1_unstructured"
    return dict(dataset="mnist1d", arch="fc", seed=seed, knowledge=knowledge, method=method,
                sparsity=0.0 if knowledge == "original" else sparsity, defense=defense,
                strength=strength, attack=attack, auc=auc, tpr_at_1pct_fpr=auc / 10,
                epsilon=epsilon, epsilon_audited=audited, n_members=400, n_nonmembers=400,
                cell_key=f"{seed}|{knowledge}|{sparsity}|{defense}|{strength}")


def _pair_rows():
    rows = []
    for seed in range(4):
        rows += [_row(seed, "original", "conf", 0.60 + 0.01 * seed),
                 _row(seed, "full", "conf", 0.55),
                 # the pair beats the pruned model by 0.10 (+- a little), the original by
                 # 0.05 - 0.01 * seed + 0.01 * seed = 0.05 exactly
                 _row(seed, "full", "pair_sum", 0.65 + 0.01 * seed + 0.002 * (-1) ** seed),
                 _row(seed, "full", "pair_diff", 0.50)]
    return pd.DataFrame(rows)


def test_pair_differences_are_paired_by_seed():
    table = pair_comparisons(_pair_rows(), "auc").set_index("pair attack")
    d_pruned = [0.10 + 0.01 * s + 0.002 * (-1) ** s for s in range(4)]
    expected = t_interval(d_pruned)
    assert table.loc["pair_sum", "pair - pruned alone"] == (
        f"{expected.mean:.3f} [{expected.low:.3f}, {expected.high:.3f}]")
    assert table.loc["pair_sum", "more than pruned?"] == "more"
    assert table.loc["pair_diff", "more than pruned?"] == "less"  # 0.50 - 0.55 every seed
    assert table.loc["pair_diff", "more than original?"] == "less"
    assert table.loc["pair_sum", "alone"] == "conf"
    assert table.loc["pair_sum", "seeds"] == 4


def test_pair_section_is_absent_without_pair_attacks_and_says_inconclusive_on_noise():
    no_pair = _pair_rows()
    assert pair_section(no_pair[~no_pair["attack"].str.startswith("pair")]) == []
    noisy = _pair_rows()
    noisy.loc[noisy["attack"] == "pair_sum", "auc"] = [0.60, 0.50, 0.60, 0.50]
    text = "\n".join(pair_section(noisy))
    assert "the original and its pruned version together" in text
    assert "inconclusive" in text


def _dp_rows():
    rows = []
    for seed in range(3):
        for sigma, accounted in ((0.5, 40.0), (2.0, 3.0)):
            common = dict(sparsity=0.5, defense="dpsgd", strength=sigma, epsilon=accounted)
            rows += [_row(seed, "full", "conf", 0.6, audited=0.1 * (seed + 1), **common),
                     _row(seed, "full", "nn", 0.6, audited=0.5, **common)]
    rows.append(_row(0, "full", "conf", 0.7))  # undefended: no epsilon at all
    return pd.DataFrame(rows)


def test_epsilon_table_per_noise_multiplier():
    table = epsilon_table(_dp_rows()).set_index("sigma")
    assert list(table.index) == [0.5, 2.0]
    assert table.loc[0.5, "accounted epsilon"] == "40.00 ± 0.00"
    fixed = t_interval([0.1, 0.2, 0.3])
    assert table.loc[2.0, "audited epsilon (conf)"] == (
        f"{fixed.mean:.2f} ± {fixed.half_width:.2f}")
    assert table.loc[2.0, "conf: min - max over seeds"] == "0.10 - 0.30"
    assert table.loc[2.0, "largest over attacks (best of A)"] == "0.50 ± 0.00"
    assert table.loc[2.0, "attack giving it"] == "nn"
    assert table.loc[2.0, "seeds with conf's audited > accounted"] == "0 of 3"
    lines = epsilon_section(_dp_rows(), ("mnist1d", "fc"))
    assert "accounted epsilon vs audited epsilon (mnist1d / fc)" in lines[0]
    assert "800 audited samples" in " ".join(lines)


@pytest.mark.parametrize("frame", [pd.DataFrame(), _pair_rows()])
def test_epsilon_table_is_empty_without_dpsgd_cells(frame):
    assert epsilon_table(frame).empty
