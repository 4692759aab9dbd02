"""Run one long preparation step (its output to a log file, a heartbeat, a deadline); find uv.

Used by :mod:`vllmd.demo.cpuenv`, whose steps (an install, a model conversion) take minutes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from vllmd.core.errors import VllmdError

STEP_TIMEOUT_S = 3_600
HEARTBEAT_S = 30.0
LOG_TAIL_LINES = 30


class PrepareError(VllmdError):
    """Raised when a step of preparing the CPU vLLM fails; says which step and shows its output."""


def uv_program() -> str:
    """The ``uv`` program: the one the ``uv`` package installed, else one on the PATH."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise PrepareError(
        "uv, which installs the CPU vLLM, is not installed: run "
        "`pip install -e '.[demo]'` in the checkout (or install uv: https://docs.astral.sh/uv/)"
    )


def run_logged(
    argv: Sequence[str],
    *,
    step: str,
    log_file: Path,
    env: Mapping[str, str],
    log: Callable[[str], object] = print,
) -> str:
    """Run ``argv`` logging to ``log_file``; return its stdout, raise PrepareError on failure.

    Prints a line every 30 s while it runs, so a long install shows it is alive.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    stdout_file = log_file.with_suffix(".out")
    started = time.monotonic()
    with log_file.open("w") as err, stdout_file.open("w") as out:
        err.write(f"$ {_shown(argv)}\n")
        err.flush()
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=dict(env)
        )
        deadline = started + STEP_TIMEOUT_S
        while True:
            try:
                code = proc.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise PrepareError(
                        f"step {step} timed out after {STEP_TIMEOUT_S} s\n"
                        f"{_tails(stdout_file, log_file)}"
                    ) from None
                log(f"cpuenv:   ... {step} still running ({time.monotonic() - started:.0f} s)")
    if code != 0:
        raise PrepareError(
            f"step {step} failed (exit status {code}): {_shown(argv)}\n"
            f"{_tails(stdout_file, log_file)}"
        )
    return stdout_file.read_text(errors="replace")


def _tails(stdout_file: Path, stderr_file: Path) -> str:
    """The last lines of a step's output, then of its errors (where uv says what failed)."""
    return (
        f"last lines of {stdout_file}:\n{_tail(stdout_file, LOG_TAIL_LINES // 3)}\n"
        f"last lines of {stderr_file}:\n{_tail(stderr_file, LOG_TAIL_LINES)}"
    )


def _shown(argv: Sequence[str]) -> str:
    """The command for a message: an inline script is shown as ``<script>``."""
    shown = ["<script>" if "\n" in arg else arg for arg in argv]
    return " ".join(shown)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:])
