"""The schedule of iterative magnitude pruning (``imp``): which sparsity each round reaches.

Every round removes the same fraction ``p`` of the weights still left, and ``p`` depends
on the number of rounds R alone: R rounds reach the deepest sparsity of the paper's
grid, 0.9, so ``p = 1 - 0.1 ** (1 / R)``. A target ``s`` takes as many full rounds as stay
below it, then a last round trimmed to land exactly on ``s``. The cumulative sparsities
of the full rounds therefore do not depend on the target, and a cell at 0.9 reuses the
rounds of a cell at 0.7 with the same R (round ``k`` of either is one build, keyed by R,
the rewind epoch and its cumulative sparsity; docs/method.md, "Iterative pruning").
"""

from __future__ import annotations

from mia_ray.catalog import IMP_REFERENCE_SPARSITY, REWIND_BUDGET_DIVISOR

# Sparsities are normalised to 6 decimals (PruneSpec), so a round that lands within
# this of the target is the target.
_TOLERANCE = 1e-6


def round_fraction(rounds: int) -> float:
    """``p``: the fraction of the remaining weights each round removes."""
    return 1.0 - (1.0 - IMP_REFERENCE_SPARSITY) ** (1.0 / rounds)


def imp_schedule(sparsity: float, rounds: int) -> tuple[float, ...]:
    """Cumulative sparsity after each round, the last one ``sparsity``.

    >>> imp_schedule(0.9, 3)
    (0.535841, 0.784557, 0.9)
    >>> imp_schedule(0.7, 3)
    (0.535841, 0.7)
    """
    keep = 1.0 - round_fraction(rounds)
    steps: list[float] = []
    k = 1
    while True:
        reached = round(1.0 - keep ** k, 6)
        if reached >= sparsity - _TOLERANCE:
            return (*steps, round(float(sparsity), 6))
        steps.append(reached)
        k += 1


def default_rewind_epoch(train_epochs: int) -> int:
    """The authors' training budget / 20, at least epoch 1."""
    return max(1, train_epochs // REWIND_BUDGET_DIVISOR)

