"""The statistics behind `versions`, `compare` and `sweep`: exact, dependency-free, and small.

- accuracy_interval: Wilson's 95% interval of an accuracy measured on n rows (the validation slice).
- mcnemar_exact: the exact two-sided McNemar test of two classifiers on the same rows, from the rows only
  one of them got right (b and c); the ties carry no information about which is better.
- holm: Holm's step-down correction of several p-values (a sweep's "vs best" tests).
- mean_spread: the mean and sample standard deviation of repeated runs (a sweep's seeds).
- rows_to_tell_paired, rows_to_tell, two_proportions_p: how many validation rows would tell two runs apart,
  where a decision is made on a slice that cannot (compare, sweep --submit-best, scores).
- finite_number: the one reader of a number from untrusted text or JSON (ledger cells, metrics.json).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence


def finite_number(value, default: Optional[float] = None) -> Optional[float]:
    """A finite float from untrusted text or JSON; ``default`` for anything else (a bool is no number)."""
    if value is None or value == "" or isinstance(value, bool):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def accuracy_interval(accuracy: float, rows: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's interval of a proportion ``accuracy`` observed on ``rows`` rows (95% by default)."""
    if rows <= 0:
        raise ValueError("an interval needs at least one row")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be within [0, 1], got {accuracy}")
    z2 = z * z
    centre = (accuracy + z2 / (2 * rows)) / (1 + z2 / rows)
    half = z * math.sqrt(accuracy * (1 - accuracy) / rows + z2 / (4 * rows * rows)) / (1 + z2 / rows)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` rows only A got right, ``c`` rows only B got right.

    Under "equally good" each of the b + c discordant rows is a fair coin, so the p-value is twice the
    binomial tail at min(b, c), capped at 1; computed with integers, exact for any slice size.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    term, tail = 1, 0  # C(n, k), each from the one before: exact, and linear in min(b, c)
    for k in range(min(b, c) + 1):
        tail += term
        term = term * (n - k) // (k + 1)
    return min(1.0, 2 * tail / 2 ** n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order: the i-th smallest is multiplied by (m - i), kept
    monotone and capped at 1. Reject where the adjusted value is below the level."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def mean_spread(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """The mean and the sample standard deviation (None for fewer than two values) of ``values``."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def verdict(name_a: str, name_b: str, b: int, c: int, p_value: float, adjusted: Optional[float] = None) -> str:
    """The McNemar result in plain words: "v5 beats v3 on 41 rows and loses on 22: p = 0.02"; with the
    Holm-adjusted p-value of a family of tests, decided on it and shown beside the raw one ("p = 0.02, Holm 0.06")."""
    decided = p_value if adjusted is None else adjusted
    shown = f"p = {p_value:.2g}" + ("" if adjusted is None else f", Holm {adjusted:.2g}")
    if decided >= LEVEL or b == c:
        return f"indistinguishable: {name_a} wins {b} rows and {name_b} wins {c}: {shown}"
    winner, loser, wins, losses = (name_a, name_b, b, c) if b > c else (name_b, name_a, c, b)
    return f"{winner} beats {loser} on {wins} rows and loses on {losses}: {shown}"


LEVEL = 0.05  # a difference is called real below this p-value (Holm-adjusted in a family of tests)
Z80 = 0.8416212335729143  # the standard normal's 80% quantile: a test that finds a real difference 4 times in 5


def rows_to_tell_paired(b: int, c: int, rows: int) -> Optional[int]:
    """Roughly how many validation rows the exact McNemar test needs to tell two runs apart (p < 0.05, 80%
    power) if they disagree as often and one wins as much more often as on these ``rows`` (b rows only A got
    right, c only B): Connor's (1987) formula. None when they are even (no number of rows would)."""
    if rows <= 0 or b == c:
        return None
    discordant, delta = (b + c) / rows, abs(b - c) / rows
    return math.ceil((Z95 * math.sqrt(discordant) + Z80 * math.sqrt(discordant - delta ** 2)) ** 2 / delta ** 2)


def rows_to_tell(p1: float, p2: float) -> Optional[int]:
    """Roughly how many validation rows each of two runs validated on different rows needs for accuracies
    ``p1`` and ``p2`` to be told apart (a two-sided test at 0.05, 80% power); None when they are equal."""
    if p1 == p2:
        return None
    return math.ceil((Z95 + Z80) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p1 - p2) ** 2)


def two_proportions_p(p1: float, n1: int, p2: float, n2: int) -> float:
    """The two-sided p-value of two accuracies measured on different rows (the pooled z-test): what is left
    when two runs cannot be paired row by row."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 1.0 if spread == 0 else math.erfc(abs(p1 - p2) / spread / math.sqrt(2))
