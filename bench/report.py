"""From samples to the report: percentiles, ratios to the floor, targets, the table, the chart."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS: tuple[str, ...] = ("figure", "p50", "p90", "p99", "floor", "floor p50", "x p50", "x p99")
COLUMNS = (*COLUMNS, "target / note", "")


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1), linear between closest ranks (numpy's default)."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99, min, max (ms) and the samples themselves."""
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 0.5), 2),
        "p90": round(percentile(samples, 0.9), 2),
        "p99": round(percentile(samples, 0.99), 2),
        "min": round(min(samples), 2) if samples else math.nan,
        "max": round(max(samples), 2) if samples else math.nan,
        "samples_ms": list(samples),
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else math.inf


def latency_figure(
    samples: Sequence[float],
    floor_name: str,
    floor: dict[str, Any] | None,
    target: str,
    passed: bool | None,
) -> dict[str, Any]:
    """A latency figure: its stats, its floor and the ratios, its target and the verdict."""
    figure = stats(samples)
    figure.update(floor=floor_name, target=target, passed=passed)
    if floor is not None:
        figure.update(
            floor_p50=floor["p50"],
            floor_p99=floor["p99"],
            ratio_p50=ratio(figure["p50"], floor["p50"]),
            ratio_p99=ratio(figure["p99"], floor["p99"]),
        )
    return figure


def _fmt_ms(value: Any) -> str:
    return "" if value is None else f"{value:.1f} ms"


def _verdict(passed: bool | None) -> str:
    return "" if passed is None else ("pass" if passed else "MISS")


def latency_row(name: str, f: dict[str, Any]) -> list[str]:
    return [
        name,
        _fmt_ms(f["p50"]),
        _fmt_ms(f["p90"]),
        _fmt_ms(f["p99"]),
        f.get("floor") or "",
        _fmt_ms(f.get("floor_p50")),
        f"{f['ratio_p50']:.2f}" if "ratio_p50" in f else "",
        f"{f['ratio_p99']:.2f}" if "ratio_p99" in f else "",
        f.get("target") or "",
        _verdict(f.get("passed")),
    ]


def value_row(
    name: str,
    value: str,
    floor_name: str = "",
    floor_value: str = "",
    x: str = "",
    target: str = "",
    passed: bool | None = None,
) -> list[str]:
    return [name, value, "", "", floor_name, floor_value, x, "", target, _verdict(passed)]


def render(rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; a row of one cell is a section heading."""
    widths = [len(c) for c in COLUMNS]
    for row in rows:
        if len(row) > 1:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    rule = "  ".join("-" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i in (0, 4, 8) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(COLUMNS), rule]
    for row in rows:
        out.append(f"[{row[0]}]" if len(row) == 1 else line(row))
    return "\n".join(out)


def chart(series: Mapping[str, Sequence[float]], path: Path) -> Path | None:
    """Box plots of the latency distributions (log scale) as a PNG; None without matplotlib."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    names = [name for name, samples in series.items() if samples]
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(names) + 1.5))
    ax.boxplot(
        [series[name] for name in names],
        vert=False,
        whis=(1, 99),
        showfliers=True,
        flierprops={"markersize": 3},
    )
    ax.set_yticks(range(1, len(names) + 1), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale); box: p25-p75, line: p50, whiskers: p1-p99")
    ax.set_title("vllmd reaction times and their floor, one run")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
