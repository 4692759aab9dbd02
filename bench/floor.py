"""The floor: the least possible work for the same events, measured in the same run.

- **spawn**: ``subprocess.Popen`` of the stand-in, exactly as vllmd spawns it, to the start time
  the stand-in records (the floor of reconfigure and of cold start's spawn);
- **interpreter**: the exec of a bare ``python -c`` to its first statement (cold start's floor).

The health command's floor, a bare interpreter's whole run, is taken in turn with it
(:func:`bench.figures.health_command`).
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.files import Records
from bench.procs import EXIT_AT_ONCE, Fleet, child_env, ms, reap, spawn, standin_argv


class SpawnFloor:
    """Popen of the stand-in → the start time it records; ms, one :meth:`sample` at a time.

    Sampled between vllmd's reconfigure samples, so that both see the same moments of the
    machine (a neighbour's test run slows both alike).
    """

    def __init__(self, fleet: Fleet) -> None:
        folder = fleet.workdir / "floor-spawn"
        folder.mkdir()
        self.records = Records(folder / "record.jsonl")
        self.samples: list[float] = []

    def sample(self) -> None:
        argv = standin_argv(self.records.path, len(self.samples), 1, *EXIT_AT_ONCE)
        t0 = time.monotonic()
        proc = spawn(argv)
        reap(proc)
        start = next(r for r in self.records.starts() if r["pid"] == proc.pid)
        self.samples.append(ms(start["t_mono"] - t0))


INTERPRETER_PROGRAM = "import os, time; os.write(1, repr(time.monotonic()).encode())"
"""A bare interpreter's first statement: it says when it ran (site imported, as for vllmd)."""


def interpreter_floor(n: int) -> list[float]:
    """The exec of ``python -c`` → its first statement runs; ms (``vllmd run`` starts so too)."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", INTERPRETER_PROGRAM],
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=True,
        )
        out.append(ms(float(done.stdout) - t0))
    return out
