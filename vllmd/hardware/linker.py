"""Refreshing the machine's linker cache (``ldconfig``), which host-injected GPU libraries need.

StartOS and the container runtimes mount the host's NVIDIA libraries into the container, but a
fresh (sub)container's ``/etc/ld.so.cache`` may not list them (aarch64 NVIDIA images): then
``libnvidia-ml.so.1`` does not load and detection would fall back to cpu, and Triton would miss
``libcuda``. Only root may rewrite the cache. The daemon refreshes it once at start; detection
refreshes it once more when NVML cannot load (glibc reads the cache anew on every ``dlopen``, so a
second try in the same process sees the new one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LDCONFIG_TIMEOUT_S = 60.0
"""How long ``ldconfig`` may take (it reads every library folder; seconds on a slow disk)."""

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[bytes]"]
"""Runs a program to completion, capturing its output (like :func:`subprocess.run`)."""


@dataclass(frozen=True, slots=True)
class Refresh:
    """What :func:`refresh_linker_cache` did: whether ``ldconfig`` ran (``tried``), whether the
    cache was rewritten (``done``), and why not."""

    done: bool
    problem: str = ""
    tried: bool = True


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=LDCONFIG_TIMEOUT_S, check=False)


def find_ldconfig() -> str | None:
    """The ``ldconfig`` program: on ``PATH``, else ``/sbin/ldconfig``; None when there is none."""
    found = shutil.which("ldconfig")
    if found is None and os.path.exists("/sbin/ldconfig"):
        found = "/sbin/ldconfig"
    return found


def refresh_linker_cache(
    *,
    euid: Callable[[], int] = os.geteuid,
    program: Callable[[], str | None] = find_ldconfig,
    run: Runner = _run,
) -> Refresh:
    """Run ``ldconfig`` once when this process is root; never raises.

    Args:
        euid: This process's effective user id (only root may rewrite the cache).
        program: Finds ``ldconfig``.
        run: Runs it.
    """
    if euid() != 0:
        return Refresh(
            False, "vllmd does not run as root, so it cannot refresh the linker cache", tried=False
        )
    found = program()
    if found is None:
        return Refresh(False, "there is no ldconfig to refresh the linker cache with", tried=False)
    try:
        done = run([found])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Refresh(False, f"ldconfig failed: {exc}")
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        return Refresh(False, f"ldconfig exited with status {done.returncode}: {tail}")
    return Refresh(True)
