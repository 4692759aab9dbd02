"""Quantities as people read them."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units as people read them: ``12.4 GB``, ``512 B``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
