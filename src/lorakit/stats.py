"""The statistics behind `versions`, `compare` and `sweep`: exact, dependency-free, and small.

- accuracy_interval: Wilson's 95% interval of an accuracy measured on n rows (the validation slice).
- mcnemar_exact: the exact two-sided McNemar test of two classifiers on the same rows, from the rows only
  one of them got right (b and c); the ties carry no information about which is better.
- holm: Holm's step-down correction of several p-values (a sweep's "vs best" tests).
- mean_spread: the mean and sample standard deviation of repeated runs (a sweep's seeds).
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
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
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


def verdict(name_a: str, name_b: str, b: int, c: int, p_value: float, level: float = 0.05) -> str:
    """The McNemar result in plain words: "v5 beats v3 on 41 rows and loses on 22: p = 0.02"."""
    if p_value >= level or b == c:
        return f"indistinguishable: {name_a} wins {b} rows and {name_b} wins {c}: p = {p_value:.2g}"
    winner, loser, wins, losses = (name_a, name_b, b, c) if b > c else (name_b, name_a, c, b)
    return f"{winner} beats {loser} on {wins} rows and loses on {losses}: p = {p_value:.2g}"
