"""Today's figures, committed, and the guard: no figure may get more than 1.5x worse.

The targets that drove earlier rounds (cold start, idle memory, micro-latencies) are retired as
goals; what they reached is kept in ``baseline.json`` (``python -m bench --save-baseline``) and
every run is compared with it. Every figure is one where more is worse. Below its grain a
difference is the machine's noise, not vllmd's: a figure is worse when it exceeds 1.5x the larger
of today's value and its unit's grain. The comparison means something on the machine the baseline
was taken on only; the floor rows (today's next to now) say whether the machine itself changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Figure, ratio

WORSE_X = 1.5
GRAIN = {"ms": 1.0, "CPU-s/min": 0.05, "MB": 1.0, "/s": 1.0, "starts": 1.0}
"""What a unit's noise is here: a millisecond of scheduling on two shared cores, five clock ticks
of CPU a minute, a megabyte of RSS, one wake-up a second."""
PATH = Path(__file__).resolve().with_name("baseline.json")


@dataclass(frozen=True)
class Today:
    """One figure as the baseline has it."""

    value: float
    unit: str


@dataclass(frozen=True)
class Verdict:
    """One figure now against today's."""

    today: float
    x: float
    """Now over today's."""
    worse: bool
    """More than :data:`WORSE_X` times today's (or the grain): a regression to look at."""


def limit(today: Today) -> float:
    """The most a figure may read before it counts as worse than today's."""
    return WORSE_X * max(today.value, GRAIN[today.unit])


def compare(figures: Mapping[str, Figure], today: Mapping[str, Today]) -> dict[str, Verdict]:
    """Each figure that today's baseline has, in the same unit, against it. A guarded figure
    that the baseline lacks is left out here and named by :func:`missing`."""
    out = {}
    for name, figure in figures.items():
        was = today.get(name)
        if was is None or was.unit != figure.unit:
            continue
        worse = figure.guarded and figure.value > limit(was)
        out[name] = Verdict(was.value, ratio(figure.value, was.value), worse)
    return out


def missing(figures: Mapping[str, Figure], today: Mapping[str, Today]) -> list[str]:
    """Guarded figures the baseline does not have (a new figure: save a new baseline)."""
    return [n for n, f in figures.items() if f.guarded and n not in today]


def load(path: Path = PATH) -> tuple[dict[str, Today], dict[str, Any]]:
    """The baseline's figures and what it says about where it was measured; none if absent."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, {}
    figures = {n: Today(float(f["value"]), str(f["unit"])) for n, f in document["figures"].items()}
    return figures, {k: v for k, v in document.items() if k != "figures"}


def save(path: Path, figures: Mapping[str, Figure], about: Mapping[str, Any]) -> None:
    """Write this run's figures as the new baseline, with ``about`` (machine, command)."""
    document = {
        **about,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "figures": {n: {"value": f.value, "unit": f.unit} for n, f in figures.items()},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
