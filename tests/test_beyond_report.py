"""The report's label-only and no-shadow section: groups, intervals and paired differences."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.beyond import attack_group, beyond_section
from analysis.report import generate_report
from tests.fixtures_results import write_synthetic_results

T = 4.302653  # t(0.975, 2)


def _row(seed, knowledge, method, sparsity, attack, auc, tpr):
    return {"cell_key": f"{seed}{knowledge}{sparsity}", "attack": attack, "dataset": "my_rows",
            "arch": "fc", "seed": seed, "knowledge": knowledge, "method": method,
            "sparsity": sparsity, "defense": "none", "strength": 0.0, "auc": auc,
            "tpr_at_1pct_fpr": tpr}


@pytest.fixture
def rows() -> pd.DataFrame:
    # Per seed s: conf 0.70, lira 0.75 (the strongest existing), gap 0.60; label_only
    # 0.70 + d_s with d = 0.03, 0.04, 0.05; qmia 0.75 exactly as lira.
    out = []
    for s, d in enumerate((0.03, 0.04, 0.05)):
        for knowledge, method, sparsity in (("original", "none", 0.0),
                                            ("full", "l1_unstructured", 0.5)):
            out += [_row(s, knowledge, method, sparsity, "conf", 0.70, 0.02),
                    _row(s, knowledge, method, sparsity, "lira", 0.75, 0.05),
                    _row(s, knowledge, method, sparsity, "gap", 0.60, 0.0),
                    _row(s, knowledge, method, sparsity, "label_only", 0.70 + d, 0.01),
                    _row(s, knowledge, method, sparsity, "qmia", 0.75, 0.05)]
    return pd.DataFrame(out)


def test_groups_name_the_adversary():
    assert [attack_group(a) for a in ("gap", "label_only", "qmia", "lira", "conf")] == [
        "label-only", "label-only", "no shadow models", "reference models",
        "confidence vector, shadows"]


def test_section_by_hand(rows):
    text = "\n".join(beyond_section(rows))
    assert "### Label-only and no-shadow attacks (my_rows / fc)" in text
    lines = text.splitlines()
    # Values over seeds: label_only 0.74 +- T * 0.01 / sqrt(3).
    assert any("original" in ln and "label-only" in ln and "label_only" in ln
               and f"0.740 ± {T * 0.01 / 3 ** 0.5:.3f}" in ln for ln in lines)
    assert any("lira (strongest existing)" in ln for ln in lines)
    # Paired differences: label_only - conf = 0.04 [0.04 -+ T * 0.01 / sqrt(3)], higher;
    # label_only - lira = -0.01, whose interval holds 0 (inconclusive); its TPR is lower
    # on every seed; qmia - lira = 0 on every seed (inconclusive).
    half = T * 0.01 / 3 ** 0.5
    assert any("label_only | conf" in ln and
               f"0.040 [{0.04 - half:.3f}, {0.04 + half:.3f}] higher" in ln for ln in lines)
    assert any("label_only | lira" in ln and
               f"-0.010 [{-0.01 - half:.3f}, {-0.01 + half:.3f}] inconclusive" in ln
               and "-0.040 [-0.040, -0.040] lower" in ln for ln in lines)
    assert any("qmia | lira" in ln and "0.000 [0.000, 0.000] inconclusive" in ln
               for ln in lines)
    assert any("label_only | gap" in ln and
               f"0.140 [{0.14 - half:.3f}, {0.14 + half:.3f}] higher" in ln for ln in lines)
    assert sum("l1_unstructured 0.5" in ln for ln in lines) == 10  # 5 values, 5 differences


def test_no_section_without_the_new_attacks(rows):
    assert beyond_section(rows[~rows.attack.isin(["label_only", "qmia"])]) == []
    assert beyond_section(rows.iloc[:0]) == []


def test_report_carries_the_section(tmp_path):
    root = write_synthetic_results(tmp_path, seeds=(0, 1), methods=("l1_unstructured",),
                                   sparsities=(0.5,), knowledge=("original", "full"),
                                   strengths=(0.0,), attacks=("conf", "gap", "label_only",
                                                              "qmia"))
    text = generate_report(root).read_text()
    assert "## Beyond the paper: label-only and no-shadow adversaries" in text
