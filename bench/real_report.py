"""The ``--real`` figures as one table: each next to its floor, with the difference and target."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.real import READY_PLUS_S, STOP_PLUS_MS, run_real
from bench.report import Spread, render

HEADER = ("figure", "p50", "p90", "p99", "floor", "floor p50", "now - floor", "target", "")


def summarize_real(raw: dict[str, Any]) -> dict[str, Any]:
    """``{"figures", "table"}`` from :func:`bench.real.run_real`'s samples."""
    ready, ready_floor = Spread.of(raw["ready"]), Spread.of(raw["ready_floor"])
    stop, stop_floor = Spread.of(raw["stop"]), Spread.of(raw["stop_floor"])
    rotation = Spread.of(raw["rotation"])
    ready_plus = round(ready.p50 - ready_floor.p50, 1)
    stop_plus = round(stop.p50 - stop_floor.p50, 1)
    ready_passed, stop_passed = ready_plus <= READY_PLUS_S * 1e3, stop_plus <= STOP_PLUS_MS
    figures = {
        "ready": {"spread": ready, "plus_ms": ready_plus, "passed": ready_passed},
        "ready_floor": {"spread": ready_floor},
        "rotation": {"spread": rotation},
        "stop": {"spread": stop, "plus_ms": stop_plus, "passed": stop_passed},
        "stop_floor": {"spread": stop_floor},
    }

    def row(label: str, s: Spread, *rest: str) -> list[str]:
        cells = [label, *(f"{v:.1f} ms" for v in (s.p50, s.p90, s.p99))]
        return cells + [*rest, "", "", "", "", ""][:5]

    def verdict(passed: bool) -> str:
        return "pass" if passed else "MISS"

    rows: list[list[str]] = [["vllmd over the real CPU vLLM (python -m bench --real)"]]
    rows.append(
        row(
            "ready: Set Model -> health success",
            ready,
            "vllm serve",
            f"{ready_floor.p50:.1f} ms",
            f"{ready_plus / 1e3:+.2f} s",
            f"<= floor + {READY_PLUS_S} s",
            verdict(ready_passed),
        )
    )
    rows.append(row("key rotation (guard): deleted -> new key accepted", rotation))
    rows.append(
        row(
            "stop: SIGTERM -> vllmd exited, group empty",
            stop,
            "vLLM's own exit",
            f"{stop_floor.p50:.1f} ms",
            f"{stop_plus:+.1f} ms",
            f"<= floor + {STOP_PLUS_MS:.0f} ms",
            verdict(stop_passed),
        )
    )
    rows.append(["floor, the same run"])
    rows.append(row("vllm serve (same argv and env) -> /health 200", ready_floor))
    rows.append(row("SIGTERM to vllm serve -> it exited", stop_floor))
    return {"figures": figures, "table": render(HEADER, rows, left={0, 4, 7})}


def main_real(out: Path, rounds: int, log: Callable[[str], None]) -> int:
    """``python -m bench --real``: run, print the table, write ``real.json`` and ``real.txt``."""
    workdir = Path(tempfile.mkdtemp(prefix="vllmd-bench-real-"))
    try:
        raw = run_real(workdir, rounds, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = summarize_real(raw)
    print(result["table"])
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "command": f"python -m bench --real --rounds {rounds}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_avg_after": os.getloadavg(),
        "raw": raw,
        "figures": result["figures"],
        "table": result["table"],
    }
    (out / "real.json").write_text(json.dumps(document, indent=2, default=_plain) + "\n")
    (out / "real.txt").write_text(result["table"] + "\n")
    log(f"wrote {out / 'real.json'}")
    return 0


def _plain(value: object) -> object:
    """JSON for the dataclasses in the figures."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
