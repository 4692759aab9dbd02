"""Reading the size of the shared-memory folder vLLM uses (the rule is :mod:`vllmd.core.shm`)."""

from __future__ import annotations

import os
from pathlib import Path

SHM_PATH = Path("/dev/shm")


def shm_space(path: Path = SHM_PATH) -> tuple[int | None, int | None]:
    """The total and free bytes of the file system at ``path``; ``(None, None)`` if unreadable."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None, None
    return stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize
