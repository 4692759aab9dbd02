"""Reading ``/proc``: the kernel's view of processes, for the daemon, ``vllmd health`` and bench.

Standard library only, and no reader blocks: ``vllmd health`` (a container HEALTHCHECK, run every
few seconds) imports this module. Every reader takes ``proc_root`` so that tests lay out a fake
``/proc``; a process that is gone, or a file that cannot be read, reads as ``None``.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def stat_fields(text: str) -> list[str]:
    """The fields of a ``/proc/PID/stat`` line after the command name, so that ``fields[0]`` is
    field 3 (the state) of proc(5).

    The command name is in parentheses and may itself contain spaces and parentheses: it ends at
    the last ``)``.
    """
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int, proc_root: Path = PROC) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of ``/proc/PID/stat``).

    With the boot id it names one process for good: a pid is reused, a start time within one
    boot is not.
    """
    try:
        text = (proc_root / str(pid) / "stat").read_text(errors="replace")
        return int(stat_fields(text)[19])  # field 22 of proc(5); fields[0] is field 3
    except (OSError, ValueError, IndexError):
        return None


def boot_id(proc_root: Path = PROC) -> str | None:
    """This boot's random id (``/proc/sys/kernel/random/boot_id``), or ``None`` when unreadable."""
    try:
        text = (proc_root / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None
    return text or None
