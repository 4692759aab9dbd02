"""From samples to the report: percentiles, one figure's numbers, the plain-text table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1), linear between closest ranks (numpy's default)."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass(frozen=True)
class Spread:
    """A latency's distribution: how many, p50, p90, p99 (ms) and the samples themselves."""

    n: int
    p50: float
    p90: float
    p99: float
    samples_ms: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        p50, p90, p99 = (round(percentile(samples, q), 2) for q in (0.5, 0.9, 0.99))
        return cls(len(samples), p50, p90, p99, tuple(samples))


@dataclass(frozen=True)
class Figure:
    """One line of the report: a value, what it is next to, and whether it is guarded."""

    label: str
    unit: str
    """``ms``, ``CPU-s/min``, ``MB``, ``/s``, ``starts``."""
    value: float
    """The number compared with today's: a latency's p50."""
    spread: Spread | None = None
    floor: str = ""
    floor_value: float | None = None
    guarded: bool = True
    """Compared with today's figure (parts of a figure and the floor are shown only)."""
    target: str = ""
    passed: bool | None = None
    text: str = ""
    """Shown instead of the value, where a number alone does not say it (the burst)."""

    @property
    def x_floor(self) -> float | None:
        return ratio(self.value, self.floor_value) if self.floor_value is not None else None


def ratio(a: float, b: float) -> float:
    """``a / b`` to two places; infinite where ``b`` is 0."""
    return round(a / b, 2) if b else math.inf


def show(value: float | None, unit: str) -> str:
    """A value with its unit as the table prints it."""
    if value is None:
        return ""
    if unit == "CPU-s/min":
        return f"{value:.3f} {unit}"
    return f"{value:.1f} {unit}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]], left: set[int]) -> str:
    """A plain-text table; a row of one cell is a section heading; ``left``: columns of text."""
    widths = [len(c) for c in header]
    for row in rows:
        if len(row) > 1:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [f"[{row[0]}]" if len(row) == 1 else line(row) for row in rows]
    return "\n".join(out)
