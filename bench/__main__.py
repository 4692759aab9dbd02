"""``python -m bench``: run the benchmark, print the table, write JSON (and a PNG chart)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.report import chart, render
from bench.run import Config, run
from bench.summary import LATENCIES, summarize

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of milliseconds: {text!r}") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError("steps are positive milliseconds")
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="How fast vllmd reacts, and what it costs idle, next to the floor.",
    )
    parser.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="samples per latency figure (default: 50, and 20 for readiness, stop, cold start)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--idle-s", type=float, help="idle window in seconds (default 60)")
    parser.add_argument(
        "--steps",
        type=_steps,
        default=(10, 30, 50),
        help="watch steps in ms to compare, comma-separated (default 10,30,50)",
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="instead: vllmd over the real CPU vLLM next to vllm serve (minutes; not in CI)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        metavar="N",
        help="--real: rounds of ready and stop (default 2)",
    )
    parser.add_argument(
        "--no-warm", action="store_true", help="--real: leave out the warm restart (minutes)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error("--samples must be at least 1")
    config = Config.make(
        quick=args.quick, samples=args.samples, idle_s=args.idle_s, steps=args.steps
    )

    began = time.monotonic()

    def log(message: str) -> None:
        print(f"bench [{time.monotonic() - began:5.1f} s]: {message}", file=sys.stderr, flush=True)

    if args.real:
        from bench.real_report import main_real

        return main_real(args.out, args.rounds, log, warm=not args.no_warm)

    raw = run(config, log)
    result = summarize(raw)
    table = render(result["rows"])
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "command": shlex.join(["python", "-m", "bench", *(argv or sys.argv[1:])]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": raw["machine"],
        "config": raw["config"],
        "load_avg": raw["load_avg"],
        "duration_s": raw["duration_s"],
        "figures": result["figures"],
        "steps": result["steps"],
        "floor": result["floor"],
        "burst_trials": raw["burst"],
        "table": table,
    }
    (args.out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "table.txt").write_text(table + "\n")
    series: dict[str, list[float]] = {}
    for mode, by_step in result["steps"].items():
        for step, figs in by_step.items():
            series[f"reconfigure {mode} {step}"] = figs["reconfigure"]["samples_ms"]
    for name in LATENCIES:
        if name != "reconfigure":  # charted once a step, above
            series[name.replace("_", " ")] = result["figures"][name]["samples_ms"]
    for name, f in result["floor"].items():
        if "samples_ms" in f:
            series[f"floor: {name.replace('_', ' ')}"] = f["samples_ms"]
    png = chart(series, args.out / "latency.png")
    log(f"wrote {args.out / 'results.json'}" + (f" and {png}" if png else " (no matplotlib)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
