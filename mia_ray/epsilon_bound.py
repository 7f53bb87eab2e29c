"""An audited epsilon: a lower bound on a victim's epsilon from one attack's scores.

Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS
2023), audit one training run whose m canaries were each included at random. The
auditor guesses "in" for some canaries, "out" for others and abstains on the rest;
r guesses, v of them right. Their Theorem 3.1 (pure DP) and its (epsilon,
delta) extension (their Section 3 and appendix algorithm): if training is
(epsilon, delta)-DP, then

    P[v or more right] <= P[B >= v] + 2 m delta max_{i=1..v} P[v-i <= B < v] / i,
    B ~ Binomial(r, q),  q = e^epsilon / (1 + e^epsilon),

the accuracy of epsilon-randomised response. That right side is :func:`p_value`. An
epsilon whose p-value is below 1 - confidence is rejected; the audited epsilon is the
largest epsilon rejected (:func:`epsilon_lower_bound`), a bound that holds with that
confidence (docs/method.md, "Audited epsilon for DP-SGD").

The canaries here are a cell's audited samples: the victim's members and as many
non-members, a uniformly random split of the same samples. The guesses come from an
attack's scores: "in" for the ``k+`` highest, "out" for the ``k-`` lowest, ties broken
by a seeded random order (never by the samples' order, which puts members first). The
choices of (k+, k-) are fixed in advance (``GUESS_COUNTS``); taking the best of the G
choices is paid for with a Bonferroni correction, each tested at (1 - confidence) / G.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from mia_ray.errors import SpecError

CONFIDENCE = 0.95
GUESS_SHARES = (0.01, 0.03, 0.1, 0.3, 1.0)
"""Shares of the canaries guessed. Each share s gives two choices: the top s*m as "in"
(no "out" guess), and the top s*m/2 "in" with the bottom s*m/2 "out"."""


def _check(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not 0 <= delta <= 1:
        raise SpecError("delta", delta, "a number in [0, 1]")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """The probability of ``v`` or more right guesses of ``r`` among ``m`` canaries
    under (``epsilon``, ``delta``)-DP, at most (Steinke et al.)."""
    _check(m, r, v, delta)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))
    if v == 0 or delta == 0:
        return min(tail, 1.0)
    # P[v - i <= B < v] for i = 1..v: the pmf at v-1, v-2, ..., 0, summed from the top.
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float = 0.0,
                        confidence: float = CONFIDENCE) -> float:
    """The largest epsilon that ``v`` right of ``r`` guesses rejects at ``confidence``
    (0 when even epsilon = 0 is not rejected)."""
    _check(m, r, v, delta)
    if not 0 < confidence < 1:
        raise SpecError("confidence", confidence, "a number in (0, 1)")
    level = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= level:
        return 0.0
    high = 1.0
    while p_value(m, r, v, high, delta) < level:  # p grows with epsilon toward 1
        high *= 2.0
        if high > 1e3:  # v = r with a huge r: more than any audit can tell apart
            return high
    return float(optimize.brentq(lambda e: p_value(m, r, v, e, delta) - level,
                                 0.0, high, xtol=1e-6))


def guess_counts(member: np.ndarray, score: np.ndarray, k_in: int, k_out: int,
                 seed: int) -> tuple[int, int]:
    """(r, v): guess "in" for the ``k_in`` highest scores, "out" for the ``k_out`` lowest."""
    member = np.asarray(member, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if member.shape != score.shape or member.ndim != 1:
        raise ValueError(f"member {member.shape} and score {score.shape} must be equal 1-D")
    if k_in < 0 or k_out < 0 or k_in + k_out > len(score):
        raise ValueError(f"need k_in, k_out >= 0 and k_in + k_out <= {len(score)}")
    tiebreak = np.random.default_rng(seed).random(len(score))
    order = np.lexsort((tiebreak, -score))  # highest score first, ties in random order
    right_in = int(member[order[:k_in]].sum())
    right_out = int((~member[order[len(score) - k_out:]]).sum()) if k_out else 0
    return k_in + k_out, right_in + right_out


def guess_choices(m: int) -> list[tuple[int, int]]:
    """The (k_in, k_out) pairs tried on ``m`` canaries, fixed before any score is seen."""
    choices = []
    for share in GUESS_SHARES:
        k = max(1, round(share * m))
        choices += [(k, 0), (k - k // 2, k // 2)]
    return list(dict.fromkeys(choices))  # tiny m can make two choices equal


def audited_epsilon(member: np.ndarray, score: np.ndarray, delta: float = 0.0, *,
                    confidence: float = CONFIDENCE, seed: int = 0) -> float:
    """The audited epsilon of one attack's ``score`` on canaries whose truth is ``member``.

    The best bound over :func:`guess_choices`, each at confidence
    1 - (1 - ``confidence``) / G, so the best one still holds at ``confidence``.
    """
    member = np.asarray(member, dtype=bool)
    m = len(member)
    if m == 0:
        raise ValueError("no canaries to audit")
    choices = guess_choices(m)
    each = 1.0 - (1.0 - confidence) / len(choices)
    return max(epsilon_lower_bound(m, *guess_counts(member, score, k_in, k_out, seed),
                                   delta=delta, confidence=each)
               for k_in, k_out in choices)
