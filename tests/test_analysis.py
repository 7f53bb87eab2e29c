"""The analysis package on synthetic results folders.

Every number the report states is recomputed here straight from the Parquet files
with plain pandas (``pd.read_parquet``), never through ``analysis.load``, so a bug in
the shared pivots cannot hide by agreeing with itself.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy import stats

from analysis.claims import (
    check_claims,
    check_claims_by_group,
)
from analysis.load import attack_vs_sparsity, load_results, samia_vs_baselines
from analysis.report import generate_report, main
from mia_ray.catalog import BASELINE_ATTACKS
from tests.fixtures_results import write_synthetic_results

FLOAT = r"(\d+\.\d+)"


# ---------------------------------------------------------------- plain-pandas helpers

def plain(root: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(root / table)


def undefended_full_pruned(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df.knowledge == "full") & (df.method != "none")
              & ((df.defense == "none") | (df.strength == 0))]


def caption(md: str, title: str) -> str:
    """The caption under the figure whose section heading starts with ``title``."""
    m = re.search(rf"^### {re.escape(title)}.*?^\*Figure \d+\.\* (.+)$", md, re.M | re.S)
    assert m, f"no figure titled {title!r}"
    return m.group(1)


def close(text: str, value: float) -> None:
    assert abs(float(text) - value) < 6e-4, (text, value)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The realistic grid: 4 methods, 3 sparsities, 6 knowledge settings, PPB 0/4/16,
    three seeds."""
    root = write_synthetic_results(tmp_path_factory.mktemp("grid"), seeds=(0, 1, 2))
    return root, generate_report(root).read_text(), None


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    """A grid built against the claims: three refuted, and no class effect at all."""
    return write_synthetic_results(
        tmp_path_factory.mktemp("failing"), knowledge=("original", "full"), seeds=(0, 1, 2),
        sparsities=(0.5, 0.9), pruning_leaks=False, samia_wins=False, ppb_works=False,
        class_spread=0.0, tables=("attacks", "divergence"))


# ---------------------------------------------------------------- the report

def test_report_has_every_section(grid):
    root, md, _ = grid
    assert (root / "report.html").is_file()
    for heading in ("## Claims", "## Figures", "## Tables", "## Missing grid coordinates"):
        assert heading in md
    for n in range(1, 5):
        assert f"### Claim {n}:" in md
    assert "No cell of the 543 expected is missing" in md
    html = (root / "report.html").read_text()
    assert html.count(' src="data:image/png;base64,') == md.count("![")
    assert "<table>" in html and "<h2>Claims</h2>" in html


def test_every_figure_exists_is_not_blank_and_has_a_caption(grid):
    root, md, _ = grid
    images = re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", md, re.M)
    assert len(images) == 8  # 7, and the per-class distributions
    for rel in images:
        pixels = imread(root / rel)
        assert pixels.ndim == 3 and pixels.shape[0] > 100
        assert pixels[..., :3].var() > 0
        rgb = (pixels[..., :3] * 255).round().astype(np.int64)
        assert len(np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2])) > 10
    assert len(re.findall(r"^\*Figure \d+\.\* .+\.$", md, re.M)) == len(images)


def test_accuracy_vs_sparsity_series_match_parquet(grid):
    root, md, _ = grid
    a = undefended_full_pruned(plain(root, "attacks"))
    expected = a.groupby(["method", "sparsity", "attack"])["accuracy"].mean()
    pivots = attack_vs_sparsity(load_results(root).attacks)
    assert sorted(pivots) == sorted(a.method.unique())
    for method, t in pivots.items():
        for (s, attack), v in t.stack().items():
            assert v == pytest.approx(expected[(method, s, attack)])
    # The numbers drawn, as saved beside the PNG.
    drawn = pd.read_csv(root / "figures" / "attack_vs_sparsity_accuracy_digits_small_cnn.csv")
    drawn = drawn[drawn.method != "original"].set_index(["method", "sparsity", "attack"])
    assert len(drawn) == len(expected)
    for key, v in drawn["accuracy"].items():
        assert v == pytest.approx(expected[key])


@pytest.mark.parametrize("metric,title", [("accuracy", "Attack accuracy vs sparsity"),
                                          ("tpr_at_1pct_fpr", "TPR at 1% FPR vs sparsity")])
def test_sparsity_captions_match_parquet(grid, metric, title):
    root, md, _ = grid
    att = plain(root, "attacks")
    pr = undefended_full_pruned(att)
    orig = att[att.knowledge == "original"]
    smax = pr.sparsity.max()
    at_max = pr[(pr.sparsity == smax) & (pr.attack == "samia")]
    m = re.search(rf"samia reaches {FLOAT} at sparsity ([\d.]+) \(mean over (\d+) methods\) vs "
                  rf"{FLOAT} for the original model, over (\d+) cells", caption(md, title))
    assert m
    close(m.group(1), at_max.groupby("method")[metric].mean().mean())
    assert float(m.group(2)) == smax and int(m.group(3)) == 4
    close(m.group(4), orig[orig.attack == "samia"][metric].mean())
    assert int(m.group(5)) == pr.cell_key.nunique() + orig.cell_key.nunique()


def test_best_cell_per_row_matches_parquet(grid):
    root, md, _ = grid
    pr = undefended_full_pruned(plain(root, "attacks"))
    means = pr.groupby(["dataset", "arch", "method", "attack"])["accuracy"].mean()
    best = means.groupby(level=[0, 1, 2]).idxmax().map(lambda k: k[-1])
    table = samia_vs_baselines(load_results(root).attacks)
    assert table["best"].to_dict() == best.to_dict()
    cap = caption(md, "SAMIA vs the eight baselines")
    m = re.search(rf"best attack in (\d+) of (\d+) rows and the highest cell is (\w+) on "
                  rf"(.+?) at {FLOAT}, over (\d+) cells", cap)
    assert m
    assert int(m.group(1)) == int((best == "samia").sum()) and int(m.group(2)) == len(best)
    top = means.idxmax()
    assert m.group(3) == top[-1] and m.group(4) == " / ".join(top[:3])
    close(m.group(5), means.max())
    assert int(m.group(6)) == pr.cell_key.nunique()
    # The markdown table sets each row's best attack in bold, and only that one.
    rows = [r for r in md.split("### SAMIA vs the eight baselines\n\nBalanced")[1]
            .split("\n\n")[1].splitlines()[2:]]
    assert len(rows) == len(best)
    assert all(r.count("**") == 2 for r in rows)


def test_divergence_caption_matches_parquet(grid):
    root, md, _ = grid
    div = plain(root, "divergence")
    pr = undefended_full_pruned(div)
    pr = pr[pr.sparsity == pr.sparsity.max()].groupby("class_id").conf_gap.mean()
    orig = div[div.knowledge == "original"].groupby("class_id").conf_gap.mean()
    m = re.search(rf"averages {FLOAT} \(pruned, range {FLOAT} to {FLOAT}\) vs {FLOAT} "
                  rf"\(original, range {FLOAT} to {FLOAT}\)",
                  caption(md, "Per-class prediction divergence"))
    assert m
    for text, v in zip(m.groups(), [pr.mean(), pr.min(), pr.max(),
                                    orig.mean(), orig.min(), orig.max()]):
        close(text, v)


def test_class_distribution_caption_matches_parquet(grid):
    root, md, _ = grid
    div = plain(root, "divergence")
    pr = undefended_full_pruned(div)
    pr = pr[pr.sparsity == pr.sparsity.max()]
    orig = div[div.knowledge == "original"]
    want = []
    for part in (orig, pr):
        med = part.groupby("class_id")[["conf_member_q50", "conf_nonmember_q50"]].mean()
        want += [int((med.conf_member_q50 > med.conf_nonmember_q50).sum()), len(med),
                 part.cell_key.nunique()]
    text = caption(md, "Per-class distributions, members vs non-members")
    m = re.search(r"in (\d+) of (\d+) classes for the original model \((\d+) cells?\) and in "
                  r"(\d+) of (\d+) classes for the pruned at sparsity [\d.]+ model "
                  r"\((\d+) cells?\)", text)
    assert m, text
    assert [int(g) for g in m.groups()] == want
    drawn = pd.read_csv(next((root / "figures").glob("class_distributions_*.csv")))
    assert set(drawn.model) == {"original", "pruned"}
    assert len(drawn) == 2 * div.class_id.nunique()


def test_defense_caption_matches_parquet(grid):
    root, md, _ = grid
    att = plain(root, "attacks")
    cells = att[(att.knowledge == "full") & (att.method != "none")].groupby("cell_key").agg(
        acc=("accuracy", "max"), test=("victim_test_acc", "first"), strength=("strength", "first"))
    by = cells.groupby("strength").mean()
    found = re.findall(rf"lambda=([\d.]+): attack {FLOAT}, test {FLOAT}",
                       caption(md, "Defense trade-off"))
    assert [float(s) for s, _, _ in found] == list(by.index)
    for s, acc, test in found:
        close(acc, by.loc[float(s), "acc"])
        close(test, by.loc[float(s), "test"])


def test_roc_and_knowledge_captions_match_parquet(grid):
    root, md, _ = grid
    roc = undefended_full_pruned(plain(root, "roc"))
    roc = roc[roc.sparsity == roc.sparsity.max()]
    curve = roc[roc.attack == "samia"].groupby("fpr").tpr.mean()
    m = re.search(rf"samia {FLOAT} vs {FLOAT} original", caption(md, "ROC curves"))
    assert m
    close(m.group(1), float(np.interp(0.01, curve.index, curve.to_numpy())))

    att = plain(root, "attacks")
    s = att[(att.attack == "samia") & (att.method != "none")
            & ((att.defense == "none") | (att.strength == 0))]
    means = s.groupby("knowledge").accuracy.mean()
    found = dict(re.findall(rf"(\w+_unknown|full) {FLOAT}", caption(md, "Adversary knowledge")))
    assert set(found) == set(means.index)
    for k, v in found.items():
        close(v, means[k])


# ---------------------------------------------------------------- claims

def claim3_per_seed(att: pd.DataFrame) -> pd.Series:
    """Per seed, the mean over cells of SAMIA minus the best baseline, in plain pandas."""
    pr = undefended_full_pruned(att)
    wide = pr.pivot_table(index=["cell_key", "seed"], columns="attack",
                          values="accuracy").reset_index()
    margin = wide["samia"] - wide[list(BASELINE_ATTACKS)].max(axis=1)
    return margin.groupby(wide["seed"]).mean()


def report_test_row(md: str, claim: int, name_start: str) -> list[str]:
    section = md.split(f"### Claim {claim}:")[1].split("### ")[0]
    rows = [r for r in section.splitlines() if r.startswith(f"| {name_start}")]
    assert len(rows) == 1, section
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_claim_3_interval_recomputed_from_parquet_with_scipy(grid):
    root, md, _ = grid
    per_seed = claim3_per_seed(plain(root, "attacks"))
    n, mean = len(per_seed), per_seed.mean()
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=per_seed.std(ddof=1) / np.sqrt(n))
    name, deciding, effect, ci, seeds, verdict_, _, _ = report_test_row(md, 3, "SAMIA margin")
    assert deciding == "yes" and int(seeds) == n == 3 and verdict_ == "holds"
    close(effect, mean)
    ci_low, ci_high = re.fullmatch(r"\[([+-][\d.]+), ([+-][\d.]+)\]", ci).groups()
    close(ci_low, low)
    close(ci_high, high)
    assert 0 < low < mean < high


def test_claims_hold_on_a_grid_built_for_them(grid):
    root, md, _ = grid
    claims = check_claims(load_results(root))
    assert [c.verdict for c in claims] == ["holds"] * 4
    assert all(c.n_seeds == 3 for c in claims)
    assert claims[2].n_cells == undefended_full_pruned(plain(root, "attacks")).cell_key.nunique()
    for c in claims:
        assert f"**Verdict: {c.verdict}** (3 seeds, {c.n_cells} cells)" in md
    # PPB: both adversaries of the defended victim are reported; the paper's decides.
    names = [(t.name.split(":")[0], t.deciding) for t in claims[3].tests]
    assert names[:2] == [("attack toward 50%, adversary defense_unknown (the paper's table)",
                          True),
                         ("attack toward 50%, adversary full", False)]


def test_claims_fail_on_a_grid_built_against_them(failing):
    claims = check_claims(load_results(failing))
    assert [c.verdict for c in claims] == ["refuted", "inconclusive", "refuted", "refuted"]
    # No class effect: every seed's contrast is exactly 0, so nothing could be detected.
    assert claims[1].tests[0].effect.mean == pytest.approx(0.0, abs=1e-12)
    # PPB that does nothing: the attack effect is noise, the test accuracy drop (8 points)
    # is what refutes the claim.
    # Without defense_unknown cells, the full adversary decides.
    attack, kept = claims[3].tests
    assert "adversary full" in attack.name and attack.deciding
    assert attack.verdict == "inconclusive" and "smallest detectable" in attack.reason
    assert kept.verdict == "refuted" and kept.effect.mean == pytest.approx(-0.08)
    per_seed = claim3_per_seed(plain(failing, "attacks"))
    assert claims[2].tests[0].effect.mean == pytest.approx(per_seed.mean())


def test_partial_results_report_lists_missing_cells(tmp_path):
    def drop(c):
        return ((c["method"] == "slimming" and c["sparsity"] == 0.9)
                or (c["knowledge"] == "pruning_unknown" and c["method"] == "l1_structured"
                    and c["sparsity"] == 0.5 and c["strength"] == 4.0))

    root = write_synthetic_results(
        tmp_path, knowledge=("original", "full", "pruning_unknown"), sparsities=(0.5, 0.9),
        strengths=(0.0, 4.0), attacks=("conf", "mentr", "gap", "samia"), drop=drop,
        tables=("attacks", "divergence", "models"))
    md = generate_report(root).read_text()

    att = plain(root, "attacks")
    coords = ["knowledge", "method", "sparsity", "strength"]
    seen = set(att[coords].drop_duplicates().itertuples(index=False, name=None))
    pruned = att[att.knowledge != "original"]
    expected = set(itertools.product(*(sorted(pruned[c].unique()) for c in coords)))
    missing = expected - seen
    assert len(missing) == 5

    section = md.split("## Missing grid coordinates")[1]
    assert "Tables with no rows at all: `roc`." in section
    assert f"5 of {len(expected) + 1} expected cells are missing" in section
    listed = {(r[4], r[5], float(r[6]), float(r[8])) for r in
              (line.strip("|").split("|") for line in section.splitlines()
               if line.startswith("| digits"))
              for r in [[x.strip() for x in r]]}
    assert listed == missing
    assert "ROC curves" not in md and "Defense trade-off" in md
    assert md.count("**Verdict: inconclusive**") == 4 and "one seed" in md


def test_empty_folder_gives_no_data_and_a_report(tmp_path):
    claims = check_claims(load_results(tmp_path / "nothing"))
    assert {c.verdict for c in claims} == {"no data"} and all(c.n_cells == 0 for c in claims)
    assert main([str(tmp_path / "nothing")]) == 0
    md = (tmp_path / "nothing" / "report.md").read_text()
    assert "No figure" in md and md.count("**Verdict: no data**") == 4


# ---------------------------------------------------------------- intervals in the report

def test_report_header_tables_and_low_fpr_flags(grid):
    root, md, _ = grid
    assert ("**Protocol:** 3 seeds (0, 1, 2); learned attacks trained for 100 epochs."
            in md)
    # 450 non-members per audit: 10 / 450 > 1%, so the TPR at 1% FPR is not supported,
    # and 0.1% FPR allows no false positive at all: its column is left out, with a note.
    section = md.split("### AUC and low-FPR TPR")[1].split("\n### ")[0]
    rows = [r for r in section.splitlines() if r.startswith(("| original", "| pruned"))]
    assert len(rows) == 18 and all(r.count("n/a (450 non-members)") == 1 for r in rows)
    assert "TPR at 0.1% FPR |" not in section and "No column for 0.1% FPR" in section
    # An accuracy table cell is mean ± the t half-width over seeds, recomputed here.
    att = plain(root, "attacks")
    pr = undefended_full_pruned(att)
    s = pr[(pr.method == "slimming") & (pr.sparsity == 0.9) & (pr.attack == "samia")]
    per_seed = s.groupby("seed").accuracy.mean()
    half = stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3)
    row = [r for r in md.split("### Attack accuracy by method and sparsity")[1].splitlines()
           if r.startswith("| slimming | 0.9 |")][0]
    samia, seeds = row.rstrip(" |").rsplit(" | ", 1)  # the last column: seeds per row
    assert samia.endswith(f"{per_seed.mean():.3f} ± {half:.3f}") and seeds == "3"


def test_supported_tpr_is_printed_when_the_audit_is_large(tmp_path):
    root = write_synthetic_results(tmp_path, seeds=(0, 1), knowledge=("original", "full"),
                                   methods=("l1_unstructured",), sparsities=(0.9,),
                                   strengths=(0.0,), n_audit=2000)
    md = generate_report(root).read_text()
    section = md.split("### AUC and low-FPR TPR")[1].split("\n### ")[0]
    rows = [r for r in section.splitlines() if r.startswith("| pruned")]
    assert rows and all(r.count("n/a (2000 non-members)") == 1 for r in rows)  # 0.1% only


def test_attacks_at_chance_are_named_with_their_interval():
    from analysis.report import _chance_section

    rows = [dict(cell_key=f"o{seed}", dataset="digits", arch="small_cnn", seed=seed,
                 knowledge="original", method="none", sparsity=0.0, defense="none",
                 strength=0.0, attack=attack, accuracy=acc)
            for attack, accs in (("nn", (0.49, 0.51, 0.50)), ("conf", (0.55, 0.56, 0.57)))
            for seed, acc in enumerate(accs)]
    text = " ".join(_chance_section(pd.DataFrame(rows)))
    assert "nn 0.500 [" in text and "conf" not in text


def test_report_margin_option_and_its_bad_value(failing, capsys):
    # PPB that costs 8 points of test accuracy: refuted at the default 3-point margin,
    # kept at a 10-point one.
    assert main([str(failing)]) == 0
    assert report_test_row((failing / "report.md").read_text(), 4, "test accuracy kept")[5] \
        == "refuted"
    assert main([str(failing), "--max-test-drop", "0.1"]) == 0
    row = report_test_row((failing / "report.md").read_text(), 4, "test accuracy kept")
    assert "margin -0.1" in row[0] and row[5] == "holds"
    with pytest.raises(SystemExit):
        main([str(failing), "--max-test-drop", "1.5"])
    assert "max_test_drop=1.5 is not allowed" in capsys.readouterr().err


def test_claims_by_dataset_table_and_the_sentence_when_datasets_disagree(tmp_path):
    small = dict(seeds=(0, 1, 2), methods=("l1_unstructured",), sparsities=(0.5, 0.9),
                 knowledge=("original", "full", "defense_unknown"), strengths=(0.0, 4.0),
                 tables=("attacks", "divergence"))
    write_synthetic_results(tmp_path, **small)
    write_synthetic_results(tmp_path, dataset="blobs", arch="fc", pruning_leaks=False, **small)
    results = load_results(tmp_path)
    by_group = check_claims_by_group(results)
    assert list(by_group) == [("blobs", "fc"), ("digits", "small_cnn")]
    assert by_group[("digits", "small_cnn")][0].verdict == "holds"
    assert by_group[("blobs", "fc")][0].verdict == "refuted"
    md = generate_report(tmp_path).read_text()
    table = md.split("### Claims by dataset and architecture")[1].split("\n### ")[0]
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in table.splitlines()
            if r.startswith("| 1 |")]
    assert [(r[1], r[5]) for r in rows] == [("blobs / fc", "refuted"),
                                           ("digits / small_cnn", "holds"),
                                           ("pooled", check_claims(results)[0].verdict)]
    # The per-group effect is the group's own per-seed mean, recomputed by hand for digits.
    digits_leak = by_group[("digits", "small_cnn")][0].tests[0].effect
    assert rows[1][2] == f"{digits_leak.mean:+.4f}"
    assert ("Claim 1 holds on digits / small_cnn and is refuted on blobs / fc." in table)


def test_a_grid_point_evaluated_again_under_a_new_key_counts_once(tmp_path):
    """An upgraded release re-evaluates a finished point under a new cell key (its
    old file stays): analysis keeps only the newer cell, and says so."""
    import warnings

    from mia_ray.results import ResultTables

    root = write_synthetic_results(tmp_path, seeds=(0,), methods=("l1_unstructured",),
                                   sparsities=(0.7,), knowledge=("original", "full"),
                                   strengths=(0.0,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        before = load_results(root).attacks
    old = before[before["knowledge"] == "original"]
    new = old.assign(cell_key="re-evaluated", accuracy=0.9,
                     finished_at=old["finished_at"] + pd.Timedelta(days=1))
    ResultTables(str(root)).write("attacks", "re-evaluated", new.to_dict("records"))
    with pytest.warns(UserWarning, match="1 cell"):
        after = load_results(root).attacks
    original = after[after["knowledge"] == "original"]
    assert set(original["cell_key"]) == {"re-evaluated"}
    assert (original["accuracy"] == 0.9).all()
    assert len(after) == len(before)  # the full-knowledge cell is untouched
