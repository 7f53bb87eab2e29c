"""The analysis package on synthetic results folders.

Every number the report states is recomputed here straight from the Parquet files
with plain pandas (``pd.read_parquet``), never through ``analysis.load``, so a bug in
the shared pivots cannot hide by agreeing with itself.
"""

from __future__ import annotations

import base64
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy import stats

from analysis.claims import (
    ClaimTest,
    check_claims,
    check_claims_by_group,
    claim_1_leakage,
    claim_2_class_divergence,
    claim_4_ppb,
    spearman,
)
from analysis.load import attack_vs_sparsity, load_results, samia_vs_baselines
from analysis.markdown_html import markdown_to_html
from analysis.report import generate_report, main
from analysis.stats import SeedInterval, paired_t_power, seeds_needed, t_interval, verdict
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


def test_one_seed_is_inconclusive_whatever_the_effect():
    rows = []
    for s, acc in [(0.0, 0.55), (0.5, 0.70), (0.7, 0.75), (0.9, 0.80)]:
        for attack in ("samia", "conf", "mentr"):
            rows.append(dict(cell_key=f"c{s}", dataset="digits", arch="small_cnn", seed=0,
                             knowledge="original" if s == 0 else "full",
                             method="none" if s == 0 else "l1_unstructured", sparsity=s,
                             defense="none", strength=0.0, attack=attack, accuracy=acc))
    c = claim_1_leakage(pd.DataFrame(rows))
    assert c.verdict == "inconclusive" and c.n_seeds == 1
    assert [t.reason for t in c.tests] == ["one seed", "one seed"]
    assert c.tests[0].effect.mean == pytest.approx(0.20)
    assert c.tests[1].effect.mean == pytest.approx(0.25)  # slope of 0.15, 0.20, 0.25 over 0.4


def test_t_interval_verdicts_and_spearman_exact():
    ci = t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1; with 2 degrees of freedom t_p = (2p - 1) / sqrt(2 p (1 - p)) exactly.
    t = 0.95 / np.sqrt(2 * 0.975 * 0.025)
    assert ci.mean == 2.0 and ci.n == 3 and ci.sd == 1.0
    assert ci.half_width == pytest.approx(t / np.sqrt(3), rel=1e-9)
    v, reason = verdict(ci, +1)  # 2 +- 2.484 contains 0
    assert v == "inconclusive" and "smallest detectable mean effect is 2.484" in reason
    narrow = t_interval([1.0, 1.5, 2.0])  # 1.5 +- 1.242
    assert verdict(narrow, +1)[0] == "holds" and verdict(narrow, -1)[0] == "refuted"
    assert verdict(t_interval([0.3]), +1) == ("inconclusive", "one seed")
    assert verdict(t_interval([]), +1)[0] == "no data"
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.894427, abs=1e-6)
    assert np.isnan(spearman([1, 1], [1, 2]))


# ---------------------------------------------------------------- partial and empty results

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


def test_markdown_to_html_is_one_self_contained_page_that_shows_html_as_text(tmp_path):
    png = b"\x89PNG\r\n\x1a\n tiny"
    (tmp_path / "fig.png").write_bytes(png)
    md = ("# T\n\nA *b* **c** `d` <script>alert(1)</script> tpr_at_1pct_fpr\nmore\n\n"
          "| a | b |\n|---|---|\n| 1 | **2** |\n\n- one\n- two\n\n"
          "![a figure](fig.png)\n\n![gone](missing.png)\n")
    html = markdown_to_html(md, tmp_path, title="r <1>")
    assert "<title>r &lt;1&gt;</title>" in html and "<h1>T</h1>" in html
    assert ("<p>A <em>b</em> <strong>c</strong> <code>d</code> "
            "&lt;script&gt;alert(1)&lt;/script&gt; tpr_at_1pct_fpr\nmore</p>") in html
    assert "<script>" not in html
    assert "<th>a</th>" in html and "<td><strong>2</strong></td>" in html
    assert "<li>one</li>" in html and "<li>two</li>" in html
    # The PNG travels inside the page; a missing image keeps its path.
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in html
    assert 'src="missing.png"' in html


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


# ---------------------------------------------------------------- selection, bookkeeping, power

def _cell_row(**kw) -> dict:
    row = dict(dataset="blobs", arch="fc", num_shadows=2, method="l1_unstructured",
               sparsity=0.7, defense="none", strength=0.0, victim_test_acc=0.9,
               victim_sparsity=0.7)
    row.update(kw)
    row.setdefault("cell_key", "|".join(str(row[k]) for k in (
        "dataset", "arch", "seed", "knowledge", "method", "sparsity", "defense", "strength")))
    return row


def test_claim_1_picks_its_attacks_on_other_seeds_not_on_the_tested_values():
    """Forty pure-noise attacks: pruning changes nothing. Picking the best three on the
    tested pruned cells themselves finds a 'leak'; picking them on the other seeds does
    not."""
    rng = np.random.default_rng(3)
    seeds, names = range(8), [f"a{i:02d}" for i in range(40)]
    noise = rng.normal(0.0, 0.05, size=(len(seeds), len(names)))
    rows = []
    for s in seeds:
        for j, a in enumerate(names):
            rows.append(_cell_row(seed=s, knowledge="original", method="none", sparsity=0.0,
                                  attack=a, accuracy=0.5))
            rows.append(_cell_row(seed=s, knowledge="full", attack=a, accuracy=0.5 + noise[s, j]))
    c = claim_1_leakage(pd.DataFrame(rows))
    # In-sample choice (the old rule), by hand: top 3 by mean over all seeds.
    top = np.argsort(noise.mean(axis=0))[-3:]
    biased = t_interval(noise[:, top].mean(axis=1))
    assert biased.low > 0  # the old rule would have said "holds"
    # Out-of-sample choice, by hand: seed s uses the top 3 of the other seeds' means.
    own = [noise[s, np.argsort(np.delete(noise, s, axis=0).mean(axis=0))[-3:]].mean()
           for s in seeds]
    leakage = c.tests[0]
    assert leakage.effect.mean == pytest.approx(np.mean(own), abs=1e-12)
    assert leakage.effect.low < 0 < leakage.effect.high and leakage.verdict == "inconclusive"


def test_claim_4_strongest_attack_does_not_look_at_the_cells_own_values():
    def frame(lift_seed0_gap: bool) -> pd.DataFrame:
        rows = []
        for s in range(4):
            for a, undefended, ppb in (("conf", 0.60, 0.55), ("gap", 0.52, 0.51)):
                rows.append(_cell_row(seed=s, knowledge="full", defense="ppb", strength=0.0,
                                      attack=a, accuracy=undefended))
                acc = 0.58 if (lift_seed0_gap and s == 0 and a == "gap") else ppb
                rows.append(_cell_row(seed=s, knowledge="defense_unknown", defense="ppb",
                                      strength=4.0, attack=a, accuracy=acc,
                                      victim_test_acc=0.89))
        return pd.DataFrame(rows)

    for lifted in (False, True):
        attack = claim_4_ppb(frame(lifted)).tests[0]
        # conf, chosen on seeds 1-3, in both arms: |0.55 - 0.5| - |0.60 - 0.5| on every seed.
        assert attack.effect.mean == pytest.approx(-0.05, abs=1e-12)
        assert attack.effect.sd == pytest.approx(0.0, abs=1e-12)


def _divergence(spec: dict[str, dict[int, dict[int, float]]]) -> pd.DataFrame:
    rows = []
    for dataset, by_seed in spec.items():
        for seed, gaps in by_seed.items():
            for cls, gap in gaps.items():
                rows.append(_cell_row(dataset=dataset, seed=seed, knowledge="full",
                                      class_id=cls, conf_gap=gap, sens_gap=gap))
    return pd.DataFrame(rows)


# blobs: the same class order on every seed. Contrasts worked by hand: seed 0 picks
# class 2 over class 0 on seeds 1-2 (means .325 and .10): .40 - .10 = .30; seed 1: .30 -
# .12 = .18; seed 2: .35 - .08 = .27. Mean .25; max - min spreads .30, .18, .27, mean .25.
BLOBS = {0: {0: .10, 1: .20, 2: .40}, 1: {0: .12, 1: .22, 2: .30}, 2: {0: .08, 1: .25, 2: .35}}


def test_claim_2_pairs_each_contrast_with_its_own_seed():
    # moons: seed 0 has three classes, seed 1 only class 0, so neither has a contrast
    # (seed 0's other seed knows one class; seed 1 has one class). The old bookkeeping
    # zipped moons' lone NaN to seed 0 and lost blobs' seed-0 value with it.
    div = _divergence({"blobs": BLOBS, "moons": {0: {0: .1, 1: .5, 2: .9}, 1: {0: .3}}})
    conf = claim_2_class_divergence(div).tests[0]
    assert conf.effect.n == 3
    assert conf.effect.mean == pytest.approx(0.25, abs=1e-12)


def test_claim_2_spread_is_the_mean_over_dataset_groups():
    # moons: spreads .8 and .4 over two seeds, mean .6; blobs .25; over both groups .425.
    moons = {0: {0: .1, 1: .5, 2: .9}, 1: {0: .5, 1: .3, 2: .7}}
    c = claim_2_class_divergence(_divergence({"blobs": BLOBS, "moons": moons}))
    assert "conf_gap 0.425" in c.evidence


def test_seeds_needed_matches_published_paired_t_sample_sizes():
    # Two-sided paired t-test, alpha 0.05, power 0.8 (Cohen's tables, G*Power):
    # d = 0.5 -> 34 pairs (power 0.8078), d = 0.8 -> 15, d = 1 -> 10 (power 0.8031).
    assert seeds_needed(0.5, 1.0) == 34 and seeds_needed(0.8, 1.0) == 15
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(-0.02, 0.02) == 10
    assert paired_t_power(1.0, 10) == pytest.approx(0.8031, abs=1e-4)
    assert paired_t_power(0.5, 34) == pytest.approx(0.8078, abs=1e-4)
    # Large n: the normal approximation ((1.95996 + 0.84162) / d)^2 = 784.9 at d = 0.1,
    # and the t-test needs at most a couple more.
    assert 785 <= seeds_needed(0.1, 1.0) <= 788
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.1, 0.0) is None


def test_a_verdict_on_a_hair_is_borderline_with_the_seeds_that_settle_it():
    # Five seeds with mean 0.0105 and half-width 0.01: the low end, 0.0005, is within
    # 0.1 x 0.01 of the margin 0.
    sd = 0.01 * np.sqrt(5) / stats.t.ppf(0.975, 4)
    close = ClaimTest("x", SeedInterval(0.0105, 0.0005, 0.0205, 5, sd), +1)
    assert close.verdict == "holds" and close.borderline and close.label == "holds (borderline)"
    needed = seeds_needed(0.0105, sd)
    assert needed == close.seeds_needed and needed > 5
    assert f"about {needed - 5} more seeds ({needed} in all)" in close.reason
    clear = ClaimTest("x", SeedInterval(0.02, 0.01, 0.03, 5, sd), +1)
    assert clear.verdict == "holds" and not clear.borderline and clear.label == "holds"
    # Against a margin, the case: the interval's end -0.0303 passes -0.03 by a hair.
    kept = ClaimTest("kept", SeedInterval(-0.0403, -0.0503, -0.0303, 5, sd), +1, null=-0.03)
    assert kept.verdict == "refuted" and kept.label == "refuted (borderline)"


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
