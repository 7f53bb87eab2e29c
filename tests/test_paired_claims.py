"""The claims' design: verdicts on the paired core only, and a headline marked
borderline only by the test that sets its verdict (issue 28, sections 3 and 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from analysis.claims import Claim, ClaimTest
from analysis.stats import SeedInterval, paired_t_power, seeds_needed

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
