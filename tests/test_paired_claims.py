"""The claims' design (issue 28): verdicts on the paired core only (section 3), one
experiment per results folder with re-keyed cells superseded (section 4), and a headline
marked borderline only by the test that sets its verdict (section 5)."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.claims import Claim, ClaimTest, check_claims, check_claims_by_group
from analysis.load import load_results
from analysis.report import generate_report
from analysis.report import main as report_main
from analysis.stats import SeedInterval, paired_t_power, seeds_needed
from mia_ray.errors import SpecError
from mia_ray.results import ResultTables
from tests.fixtures_results import write_synthetic_results

ROOT = Path(__file__).resolve().parents[1]
SD = 0.01 * np.sqrt(5) / stats.t.ppf(0.975, 4)  # half-width 0.01 at five seeds


def _test(mean: float, *, null: float = 0.0, direction: int = +1,
          deciding: bool = True) -> ClaimTest:
    return ClaimTest("t", SeedInterval(mean, mean - 0.01, mean + 0.01, 5, SD), direction,
                     null=null, deciding=deciding)


def _claim(*tests: ClaimTest) -> Claim:
    from analysis.claims import combine

    return Claim(4, "s", combine(list(tests)), "", 1, tuple(tests))


def test_a_clear_refutation_is_not_borderline_beside_a_borderline_inconclusive_test():
    # The small grid's claim 4: the test-accuracy test clearly below its -0.03 margin,
    # the attack test inconclusive with an end on a hair of 0.
    kept = _test(-0.068, null=-0.03)
    toward = _test(-0.0095, direction=-1)  # interval [-0.0195, +0.0005]
    assert kept.verdict == "refuted" and not kept.borderline
    assert toward.verdict == "inconclusive" and toward.borderline
    claim = _claim(toward, kept)
    assert claim.verdict == "refuted" and claim.label == "refuted"
    # The per-test labels keep their own marks.
    assert toward.label == "inconclusive (borderline)" and kept.label == "refuted"


def test_borderline_headline_follows_the_tests_that_set_the_verdict():
    hair_refuted = _test(-0.0405, null=-0.03)  # high end -0.0305: refuted on a hair
    assert hair_refuted.verdict == "refuted" and hair_refuted.borderline
    assert _claim(_test(0.05), hair_refuted).label == "refuted (borderline)"
    # A second, clear refutation settles it.
    assert _claim(hair_refuted, _test(-0.1, null=-0.03)).label == "refuted"
    # Holds: one deciding test on a hair could flip the claim.
    assert _claim(_test(0.05), _test(0.0105)).label == "holds (borderline)"
    assert _claim(_test(0.05), _test(0.0105, deciding=False)).label == "holds"


def test_core_seeds_comment_states_the_power_it_has():
    source = " ".join((ROOT / "sweeps" / "full_grid.py").read_text().split())
    assert "CORE_SEEDS = (0, 1, 2, 3, 4)" in source
    assert round(paired_t_power(1.0, 5), 2) == 0.40
    assert paired_t_power(1.7, 5) >= 0.8 > paired_t_power(1.6, 5)
    assert seeds_needed(1.0, 1.0) == 10
    assert "power 0.40" in source and "1.7 per-seed standard deviations" in source
    assert "needs 10 seeds" in source
    assert "about one per-seed standard deviation" not in source


# ---------------------------------------------------------------- section 3: the paired core

def _core(c: dict) -> bool:
    """The full grid's claims core (sweeps/full_grid.py: claims_core), on the fixture's
    axes: the original, undefended full knowledge at 0.7 and 0.9, PPB at 4 against
    undefended shadows at 0.7."""
    return (c["knowledge"] == "original"
            or (c["knowledge"] == "full" and c["sparsity"] in (0.7, 0.9) and c["strength"] == 0)
            or (c["knowledge"] == "defense_unknown" and c["sparsity"] == 0.7
                and c["strength"] == 4.0))


def _full_grid_shaped(root: Path) -> Path:
    """Seeds 0-4 on the core, seed 0 alone on the breadth (every sparsity, strength and
    knowledge setting), as the full grid writes them. defense_unknown against an
    undefended victim is the full cell in a real grid, so it is not written."""
    return write_synthetic_results(
        root, seeds=(0, 1, 2, 3, 4), methods=("l1_unstructured", "l1_structured"),
        sparsities=(0.5, 0.7, 0.9), knowledge=("original", "full", "defense_unknown",
                                                "pruning_unknown"),
        strengths=(0.0, 1.0, 4.0, 16.0), noise=0.01, zero_defense="none",
        drop=lambda c: (c["knowledge"] == "defense_unknown" and c["strength"] == 0)
        or (c["seed"] > 0 and not _core(c)))


def _core_alone(full: Path, root: Path) -> Path:
    """The same folder less its breadth cells (the very same files of the core)."""
    shutil.copytree(full, root)
    attacks = pd.read_parquet(root / "attacks")
    cells = attacks.drop_duplicates("cell_key")
    breadth = [k for k, c in zip(cells["cell_key"], cells.to_dict("records")) if not _core(c)]
    assert breadth
    for table in ("attacks", "divergence", "roc"):
        for key in breadth:
            (root / table / f"{key}.parquet").unlink()
    return root


def _verdicts(claims) -> list:
    return [(c.number, c.verdict, c.label, c.n_cells,
             [(t.name, t.verdict, round(t.effect.mean, 12), round(t.effect.low, 12),
               round(t.effect.high, 12), t.effect.n) for t in c.tests]) for c in claims]


@pytest.fixture(scope="module")
def full_and_core(tmp_path_factory):
    base = tmp_path_factory.mktemp("paired")
    full = _full_grid_shaped(base / "full")
    return full, _core_alone(full, base / "core")


def test_claims_on_the_full_grids_shape_are_those_of_its_core_alone(full_and_core):
    full, core = full_and_core
    with_breadth, alone = load_results(full), load_results(core)
    assert with_breadth.attacks["cell_key"].nunique() > 2 * alone.attacks["cell_key"].nunique()
    assert _verdicts(check_claims(with_breadth)) == _verdicts(check_claims(alone))
    by_group = check_claims_by_group(with_breadth)
    assert {g: _verdicts(c) for g, c in by_group.items()} == {
        g: _verdicts(c) for g, c in check_claims_by_group(alone).items()}
    # Every claim was decided on five seeds, claim 4 on PPB at 4 alone.
    claims = check_claims(with_breadth)
    assert all(c.n_seeds == 5 for c in claims)
    ppb = with_breadth.attacks[with_breadth.attacks["cell_key"].isin(claims[3].cells)]
    assert set(ppb["strength"]) == {0.0, 4.0} and set(ppb["sparsity"]) == {0.7}


def test_the_report_says_which_cells_decided_and_how_many_seeds_each_value_has(
        full_and_core, tmp_path):
    full, _ = full_and_core
    root = shutil.copytree(full, tmp_path / "report")
    md = generate_report(root).read_text()
    n_all = pd.read_parquet(root / "attacks")["cell_key"].nunique()
    n_core = 5 * (1 + 2 * 3)  # per seed: the original; 2 methods x (0.7, 0.9, PPB 4)
    assert (f"The claims are tested on the {n_core} of {n_all} cells whose grid point is "
            "present at every seed") in md
    claim4 = md.split("### Claim 4")[1].split("### ")[0]
    assert ("*Decided by* 20 cells: dataset digits; arch small_cnn; seed 0, 1, 2, 3, 4; "
            "knowledge defense_unknown, full; method l1_structured, l1_unstructured; "
            "sparsity 0.7; defense none 0, ppb 4.") in claim4
    # The breadth feeds the tables, each row with its seed count.
    table = md.split("### Attack accuracy by method and sparsity")[1].split("\n### ")[0]
    rows = {tuple(r.split(" | ")[:2]): r.rstrip(" |").rsplit(" | ", 1)[1]
            for r in table.splitlines() if r.startswith("| l1_")}
    assert rows[("| l1_unstructured", "0.5")] == "1" and rows[("| l1_unstructured", "0.7")] == "5"


# ---------------------------------------------------------------- section 4: settings

def _second_run(root: Path, **changes) -> None:
    """The same grid points written again under new cell keys, a day later, with
    ``changes`` to their rows: a second run into the same storage."""
    rows = pd.read_parquet(root / "attacks")
    writer = ResultTables(str(root))
    for key, cell in rows.groupby("cell_key"):
        again = cell.assign(cell_key=f"{key}-again",
                            finished_at=cell["finished_at"] + pd.Timedelta(days=1), **changes)
        # A null string reads back as NaN; Arrow wants None.
        again["setting"] = again["setting"].astype(object).where(again["setting"].notna(), None)
        writer.write("attacks", f"{key}-again", again.to_dict("records"))


def _small(root: Path, **kw) -> Path:
    return write_synthetic_results(root, seeds=(0, 1), methods=("l1_unstructured",),
                                   sparsities=(0.7,), knowledge=("original", "full"),
                                   strengths=(0.0,), **kw)


IMP = '{"train":{"max_epochs":20},"prune":{"rounds":4,"rewind_epoch":%d}}'


@pytest.mark.parametrize("first,changes,named", [
    (None, {"attack_epochs": 10}, "attack_epochs=[10, 100]"),
    (None, {"setting": '{"train":{"max_epochs":50}}'}, "train.max_epochs=[20, 50]"),
    (IMP % 1, {"setting": IMP % 3}, "prune.rewind_epoch=[1, 3]"),
])
def test_two_experiments_in_one_folder_are_refused_naming_the_setting(
        tmp_path, capsys, first, changes, named):
    root = _small(tmp_path, **({"setting": first} if first else {}))
    _second_run(root, **changes)
    with pytest.raises(SpecError, match=re.escape(named)):
        load_results(root)
    assert report_main([str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and named in err and "its own --storage" in err


def test_the_attack_list_is_a_setting_too(tmp_path):
    root = _small(tmp_path)
    rows = pd.read_parquet(root / "attacks")
    writer = ResultTables(str(root))
    for key, cell in rows.groupby("cell_key"):
        fewer = cell[cell["attack"] != "samia"].assign(cell_key=f"{key}-b")
        writer.write("attacks", f"{key}-b", fewer.to_dict("records"))
    with pytest.raises(SpecError, match="attacks="):
        load_results(root)


def test_the_same_experiment_under_a_newer_key_is_superseded_not_refused(tmp_path):
    # Same setting, recorded or not (a table written before the column): re-keyed.
    for recorded in ('{"train":{"max_epochs":20}}', None):
        root = _small(tmp_path / str(recorded is None), setting=recorded)
        _second_run(root, accuracy=0.9)
        with pytest.warns(UserWarning, match="4 cell"):
            attacks = load_results(root).attacks
        assert attacks["cell_key"].str.endswith("-again").all()
        assert (attacks["accuracy"] == 0.9).all()


def test_n_references_stay_apart_as_a_column(tmp_path):
    root = _small(tmp_path)
    _second_run(root, num_references=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attacks = load_results(root).attacks
    assert attacks.groupby("num_references")["cell_key"].nunique().to_dict() == {0: 4, 8: 4}
