"""The daemon stays light (issue 14: idle RSS <= 30 MB next to a bare interpreter with anyio):
what only some paths need is imported by those paths only. Measured in ``bench/``; held here by
what the daemon's modules load, which a test can check without timing anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "watchfiles", "pynvml", "multiprocessing", "ssl", "email", "http.client")
"""An HTTP client (the probe writes its GET by hand), watchfiles (the polling fallback only),
NVML (the actions' hardware detection), and what they pull in."""


def test_the_daemon_loads_nothing_that_only_other_paths_need() -> None:
    code = (
        "import sys, vllmd.cli, vllmd.daemon.serve\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.split() == []
