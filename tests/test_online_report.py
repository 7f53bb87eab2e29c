"""The report's "beyond the paper" section: claims 1 and 4 with an online attack."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.online import chosen_attack, claim_1_online, claim_4_online, online_section
from analysis.report import generate_report
from tests.fixtures_results import write_synthetic_results


def _row(seed, knowledge, method, sparsity, defense, strength, tpr, auc, attack="lira_online"):
    return {"cell_key": f"{seed}{knowledge}{method}{defense}{strength}", "attack": attack,
            "dataset": "blobs", "arch": "fc", "seed": seed, "knowledge": knowledge,
            "method": method, "sparsity": sparsity, "defense": defense, "strength": strength,
            "tpr_at_1pct_fpr": tpr, "auc": auc, "num_references": 16, "n_nonmembers": 2000}


@pytest.fixture
def rows() -> pd.DataFrame:
    # Per seed s: original TPR 0.10, pruned 0.10 + d_s with d = 0.02, 0.03, 0.04;
    # PPB at lambda 4 has AUC 0.55 against the pruned 0.60 (+ s / 100).
    out = []
    for s, d in enumerate((0.02, 0.03, 0.04)):
        out += [_row(s, "original", "none", 0.0, "none", 0.0, 0.10, 0.60),
                _row(s, "full", "l1_unstructured", 0.7, "ppb", 0.0, 0.10 + d, 0.60 + s / 100),
                _row(s, "full", "l1_unstructured", 0.7, "ppb", 4.0, 0.10, 0.55 + s / 100),
                _row(s, "full", "l1_unstructured", 0.7, "ppb", 0.0, 0.9, 0.9, attack="lira")]
    return pd.DataFrame(out)


def test_claim_1_online_by_hand(rows):
    # d = 0.02, 0.03, 0.04: mean 0.03, sd 0.01, t(0.975, 2) = 4.303 -> 0.03 +- 0.02484.
    test = claim_1_online(rows[rows.attack == "lira_online"], "tpr_at_1pct_fpr")
    assert test.effect.mean == pytest.approx(0.03)
    assert test.effect.low == pytest.approx(0.03 - 4.302653 * 0.01 / 3 ** 0.5, abs=1e-6)
    assert test.verdict == "holds"


def test_claim_4_online_by_hand(rows):
    # |AUC - 0.5|: PPB 0.05 + s/100, undefended 0.10 + s/100: e = -0.05 on every seed.
    test = claim_4_online(rows[rows.attack == "lira_online"], "auc", 0.5)
    assert test.effect.mean == pytest.approx(-0.05) and test.effect.n == 3
    assert test.verdict == "holds"


def test_the_attack_is_fixed_by_rule_not_by_its_numbers(rows):
    assert chosen_attack(rows) == "lira_online"
    # rmia_online scoring higher does not change the choice.
    better = rows[rows.attack == "lira_online"].assign(attack="rmia_online", auc=0.99)
    assert chosen_attack(pd.concat([rows, better])) == "lira_online"
    assert chosen_attack(better) == "rmia_online"
    assert online_section(rows[rows.attack == "lira"]) == []


def test_report_has_the_section_labelled_beyond_the_paper(tmp_path):
    root = write_synthetic_results(tmp_path, seeds=(0, 1, 2), methods=("l1_unstructured",),
                                   sparsities=(0.7,), knowledge=("original", "full"),
                                   strengths=(0.0, 4.0), attacks=("conf", "lira_online"))
    text = generate_report(root).read_text()
    section = text.split("## Beyond the paper: claims 1 and 4 with an online attack")[1]
    section = section.split("\n## ")[0]
    assert "`lira_online` (16 reference models per cell)" in section
    assert "1. pruned - original" in section and "4. PPB - undefended" in section
    # 450 non-members: 1% FPR admits 4 false positives, under the 10 a TPR needs.
    assert "With 450 non-members a TPR at 1% FPR rests on fewer than 10 false" in section


def test_online_against_offline_by_hand():
    from analysis.online import online_vs_offline

    # AUC online 0.60, 0.62, 0.64 against offline 0.55, 0.56, 0.57: differences 0.05,
    # 0.06, 0.07, mean 0.06, sd 0.01 -> 0.06 +- 4.302653 * 0.01 / sqrt(3).
    rows = pd.DataFrame(
        [_row(s, "original", "none", 0.0, "none", 0.0, 0.1, 0.60 + 0.02 * s) for s in range(3)]
        + [_row(s, "original", "none", 0.0, "none", 0.0, 0.1 + s / 100, 0.55 + 0.01 * s,
                attack="lira") for s in range(3)])
    table = online_vs_offline(rows).set_index("metric")
    auc = table.loc["auc"]
    assert auc["online"] == "lira_online" and auc["num_references"] == 16
    assert auc["difference"].mean == pytest.approx(0.06)
    assert auc["difference"].low == pytest.approx(0.06 - 4.302653 * 0.01 / 3 ** 0.5, abs=1e-6)
    assert auc["verdict"] == "online higher"
    # TPR differences 0, -0.01, -0.02: the interval holds 0.
    assert table.loc["tpr_at_1pct_fpr", "verdict"] == "inconclusive"
    section = "\n".join(online_section(rows))
    assert "### Online against offline, same victims" in section
    assert "| blobs / fc | 16 | lira | AUC | 0.620 | 0.560 | 0.060 [" in section
