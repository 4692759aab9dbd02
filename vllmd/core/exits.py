"""How a process ended, in words: the one description the logs and ``health.json`` share.

Pure: no I/O. A return code follows ``subprocess``: ``N >= 0`` is an exit status, ``-N`` death by
signal ``N``, ``None`` a process that has not ended.
"""

from __future__ import annotations

import signal


def signal_name(returncode: int) -> str | None:
    """``SIGKILL`` for ``-9``; ``None`` for an exit status or a signal Python does not name."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return None


def describe_exit(returncode: int | None) -> str:
    """``exited with status 1``, ``was killed by signal 9 (SIGKILL)``, or ``still running``.

    A signal Python has no name for (a real-time one) is given by number alone.
    """
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exited with status {returncode}"
    name = signal_name(returncode)
    number = -returncode
    return f"was killed by signal {number} ({name})" if name else f"was killed by signal {number}"
