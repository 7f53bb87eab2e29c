"""The audited epsilon: Steinke et al.'s one-run bound, checked against their rule and
against guesses whose epsilon is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mia_ray.epsilon_bound import (
    audited_epsilon,
    epsilon_lower_bound,
    guess_choices,
    guess_counts,
    p_value,
)
from mia_ray.errors import SpecError


def paper_p_value(m, r, v, eps, delta):
    """The rule of Steinke, Nasr and Jagielski's appendix algorithm, term by term: the
    randomised-response tail, plus 2 m delta times the largest mean of the pmf over
    the i values just below v, accumulated one i at a time."""
    q = 1 / (1 + math.exp(-eps))
    tail = stats.binom.sf(v - 1, r, q)
    alpha, running = 0.0, 0.0
    for i in range(1, v + 1):
        running += stats.binom.pmf(v - i, r, q)
        if running > i * alpha:
            alpha = running / i
    return min(tail + alpha * delta * 2 * m, 1.0)


def paper_epsilon(m, r, v, delta, level):
    """Their bisection: keep p(eps_min) < level <= p(eps_max), 30 halvings."""
    low, high = 0.0, 1.0
    while paper_p_value(m, r, v, high, delta) < level:
        high += 1
    for _ in range(30):
        mid = (low + high) / 2
        if paper_p_value(m, r, v, mid, delta) < level:
            low = mid
        else:
            high = mid
    return low


@pytest.mark.parametrize("m, r, v", [(1000, 100, 70), (1000, 20, 20), (500, 500, 300),
                                     (100, 7, 0), (2000, 40, 31), (810, 405, 260)])
@pytest.mark.parametrize("delta", [0.0, 1e-5, 1e-3])
def test_p_value_and_bound_follow_the_papers_rule(m, r, v, delta):
    for eps in (0.0, 0.3, 1.0, 2.5, 6.0):
        assert p_value(m, r, v, eps, delta) == pytest.approx(
            paper_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-12)
    assert epsilon_lower_bound(m, r, v, delta) == pytest.approx(
        paper_epsilon(m, r, v, delta, 0.05), abs=1e-5)


def test_hand_worked_values():
    # Two guesses, both right, no privacy at all claimed to be lost: P[Bin(2, 1/2) >= 2].
    assert p_value(10, 2, 2, 0.0) == pytest.approx(0.25)
    # Ten right of ten: q^10 = 0.05 at the bound, so q = 0.05^(1/10) and eps = logit(q).
    q = 0.05 ** 0.1
    assert epsilon_lower_bound(10, 10, 10) == pytest.approx(math.log(q / (1 - q)), abs=1e-5)
    # Half right proves nothing.
    assert epsilon_lower_bound(1000, 100, 50) == 0.0


def test_guess_counts_take_the_extremes_and_break_ties_at_random():
    member = np.array([True, True, False, False, True, False])
    score = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.0])
    assert guess_counts(member, score, 2, 0, seed=0) == (2, 1)  # 0.9 in, 0.8 out: one right
    assert guess_counts(member, score, 1, 2, seed=0) == (3, 2)  # 0.9 right; 0.0 right, 0.1 wrong
    # Every score equal and members first: the samples' order must not pick members.
    flat = np.zeros(1000)
    ordered = np.arange(1000) < 500
    assert abs(guess_counts(ordered, flat, 100, 0, seed=1)[1] - 50) < 20
    assert audited_epsilon(ordered, flat) == 0.0


def _balanced_members(m, rng):
    member = np.zeros(m, dtype=bool)
    member[rng.permutation(m)[:m // 2]] = True  # as the victim's split: half members
    return member


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0])
def test_randomised_response_at_a_known_epsilon_stays_below_it(eps):
    """Guesses right with probability e^eps / (1 + e^eps), each on its own: exactly
    eps-DP randomised response, the worst case the bound is built on."""
    bounds = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        member = _balanced_members(4000, rng)
        right = rng.random(len(member)) < 1 / (1 + math.exp(-eps))
        guess = np.where(right, member, ~member)
        score = guess + rng.normal(0, 0.01, len(member))  # a score, not just a verdict
        bounds.append(audited_epsilon(member, score, seed=seed))
    assert max(bounds) <= eps
    assert np.mean(bounds) > 0.6 * eps  # 4000 canaries: close to the truth, not vacuous


def test_no_signal_gives_about_zero():
    bounds = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        member = _balanced_members(810, rng)
        bounds.append(audited_epsilon(member, rng.random(810), 1e-5, seed=seed))
    # A 95% bound claims a leak that is not there in about one run in twenty.
    assert sum(b > 0.01 for b in bounds) <= 2
    assert max(bounds) < 0.3
    assert np.median(bounds) == 0.0


def test_guess_choices_are_fixed_by_m_alone():
    choices = guess_choices(810)
    assert (8, 0) in choices and (405, 405) in choices and len(choices) == 10
    assert all(k_in + k_out <= 810 for k_in, k_out in choices)


def test_bad_input_gets_one_message():
    with pytest.raises(SpecError, match="delta"):
        epsilon_lower_bound(100, 10, 5, delta=2.0)
    with pytest.raises(SpecError, match="confidence"):
        epsilon_lower_bound(100, 10, 5, confidence=1.0)
    with pytest.raises(ValueError, match="v <= r <= m"):
        p_value(10, 5, 6, 1.0)


def test_only_dpsgd_cells_get_an_audited_epsilon():
    from mia_ray.evaluation import _audited_epsilon
    from mia_ray.knowledge import CellSpec
    from mia_ray.specs import DefenseSpec

    rng = np.random.default_rng(0)
    member = _balanced_members(400, rng)
    score = member + rng.normal(0, 0.5, 400)
    dp = CellSpec(defense=DefenseSpec(name="dpsgd", strength=1.0, delta=1e-5))
    assert _audited_epsilon(dp, "conf", member, score) > 0.5
    assert math.isnan(_audited_epsilon(CellSpec(), "conf", member, score))
