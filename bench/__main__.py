"""``python -m bench``: run the benchmark, print the table against today's figures, write JSON.

Exit status 1 when a guarded figure is more than 1.5x worse than the committed baseline's
(``--quick`` runs compare but never fail: their few samples are for the smoke test).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import baseline
from bench.run import Config, run
from bench.summary import flatten, summarize, table

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PARTS = ("ready", "switch")
"""The parts of ``--real``: ready, key rotation and stop; the switch to a model not cached."""


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p for p in text.split(",") if p)
    if not parts or set(parts) - set(PARTS):
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}: not {text!r}")
    return parts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="How fast vllmd reacts and what it costs idle, against today's figures.",
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
        "--baseline",
        type=Path,
        default=baseline.PATH,
        help=f"today's figures to compare with (default {baseline.PATH})",
    )
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help="write this run's figures to --baseline (after a change that is meant)",
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="instead: vllmd over the real CPU vLLM next to vllm serve (minutes; not in CI)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, metavar="N", help="--real: rounds of ready and stop"
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=PARTS,
        metavar="PART,...",
        help=f"--real: which parts, of {','.join(PARTS)} (default all)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error("--samples must be at least 1")
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"bench [{time.monotonic() - began:5.1f} s]: {message}", file=sys.stderr, flush=True)

    if args.real:
        from bench.real_report import main_real

        return main_real(args.out, args.rounds, log, args.only)

    config = Config.make(quick=args.quick, samples=args.samples, idle_s=args.idle_s)
    raw = run(config, log)
    sections = summarize(raw)
    figures = flatten(sections)
    today, about = baseline.load(args.baseline)
    verdicts = baseline.compare(figures, today)
    text = table(sections, verdicts)
    worse = [name for name, v in verdicts.items() if v.worse]
    new = baseline.missing(figures, today)
    print(text)
    if about:
        print(f"\ntoday: {about.get('measured', '?')}, {about.get('command', '?')}")
    for name in worse:
        limit = baseline.limit(today[name])
        print(f"WORSE: {figures[name].label.strip()}: over {limit:g} {figures[name].unit}")
    if new:
        print(f"not in the baseline (save one): {', '.join(new)}")

    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "command": command,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "raw": dataclasses.asdict(raw),
        "figures": {name: dataclasses.asdict(f) for name, f in figures.items()},
        "today": {name: dataclasses.asdict(v) for name, v in verdicts.items()},
        "worse": worse,
        "table": text,
    }
    (args.out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "table.txt").write_text(text + "\n")
    if args.save_baseline:
        about = {"command": command, "commit": _commit(), "machine": raw.machine}
        baseline.save(args.baseline, figures, about | {"load_avg": raw.load_avg})
        log(f"wrote the baseline {args.baseline}")
    log(f"wrote {args.out / 'results.json'}")
    return 1 if worse and not config.quick else 0


def _commit() -> str:
    """The commit measured (with ``+`` when the tree had changes), for the baseline's record."""
    here = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty=+"], cwd=here, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
