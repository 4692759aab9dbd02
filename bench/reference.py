"""The floor's reference children: ``python -m bench.reference inotify|awatch|awatch-polling``.

Each prints ``{"armed": true}``, then one JSON line per rename of ``store.json`` in FOLDER, with
the CLOCK_MONOTONIC time it learned of it. ``awatch`` is a few lines of watchfiles with its
defaults (but for ``step``) that also spawn the stand-in, as vllmd would; ``inotify`` is raw
inotify, a reader blocked in ``poll``. Each exits by itself after half an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import EXIT_AT_ONCE, reap, spawn, standin_argv
from vllmd.daemon.inotify import IN_MOVED_TO, Inotify

CHILD_MAX_S = 1_800
"""A reference child exits by itself after this long, whatever happens to the benchmark."""


def _emit(value: dict[str, Any]) -> None:
    os.write(1, (json.dumps(value) + "\n").encode())


def _inotify_child(folder: str, name: str) -> None:
    deadline = time.monotonic() + CHILD_MAX_S
    with Inotify() as ino:
        ino.add_watch(folder, IN_MOVED_TO)
        _emit({"armed": True})
        while (left := deadline - time.monotonic()) > 0:
            for event in ino.read_within(left):  # blocked in poll: no idle wake-ups
                if event.name == name:
                    _emit({"t_event": time.monotonic()})


async def _awatch_child(folder: str, name: str, step_ms: int, record: str, polling: bool) -> None:
    import anyio
    from watchfiles import awatch

    children: list[subprocess.Popen[bytes]] = []
    _emit({"armed": True})
    seq = 0
    with anyio.move_on_after(CHILD_MAX_S):
        # watchfiles' defaults otherwise (polling: every 300 ms, as vllmd's fallback)
        async for changes in awatch(folder, step=step_ms, force_polling=polling):
            if not any(Path(path).name == name for _, path in changes):
                continue
            t_event = time.monotonic()
            seq += 1
            child = spawn(standin_argv(Path(record), seq, 1, *EXIT_AT_ONCE))
            children.append(child)
            _emit({"t_event": t_event, "pid": child.pid})
            for done in [c for c in children if c.poll() is not None]:
                children.remove(done)
                reap(done)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("kind", choices=("inotify", "awatch", "awatch-polling"))
    parser.add_argument("folder")
    parser.add_argument("step_ms", nargs="?", type=int, default=50)
    parser.add_argument("record", nargs="?", default=os.devnull)
    args = parser.parse_args(argv)
    if args.kind == "inotify":
        _inotify_child(args.folder, "store.json")
    else:
        import anyio

        polling = args.kind == "awatch-polling"
        anyio.run(_awatch_child, args.folder, "store.json", args.step_ms, args.record, polling)
    return 0


if __name__ == "__main__":
    sys.exit(main())
