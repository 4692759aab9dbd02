"""``vllmd health``: read ``RUN_DIR/health.json``, check that the run that wrote it is running.

StartOS runs the ready check about once a second until the first success (a 35-minute load is
2,000 runs), so this command must cost little more than the interpreter's own start: ``__main__``
calls :func:`main` before importing the command line, and this module imports ``os``, ``sys``,
``json``, the ``/proc`` reader and the state-file reader only (no argparse, no settings, no
logging, no event loop).
:mod:`vllmd.daemon.healthfile` writes the file; the exit codes and the reading live here.
"""

from __future__ import annotations

import json
import os
import sys

from vllmd import options
from vllmd.process.proc import PROC, boot_id, cmdline, start_time
from vllmd.state.readfile import UnreadableFile, read_small_file

TYPE_CHECKING = False  # typing's own costs what this module saves
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence
    from typing import TextIO

    from vllmd.settings import Settings

    StrPath = str | os.PathLike[str]

EXIT_SUCCESS = 0
EXIT_UNHEALTHY = 1
EXIT_NO_DAEMON = 2

MAX_HEALTH_BYTES = 1 << 20
"""A health file larger than this is not one (the daemon writes about a KiB)."""

_VOLUMES = (options.DATA, options.PUBLIC, options.RUN_DIR)


def read_health(path: StrPath) -> dict[str, object] | None:
    """The health document at ``path``, or ``None`` when there is none or it is not one.

    Read without blocking and with a size cap; JSON nested deeper than Python's stack is "not
    one" too.
    """
    try:
        document = json.loads(read_small_file(path, MAX_HEALTH_BYTES))
    except (OSError, UnreadableFile, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def instance_in(document: Mapping[str, object]) -> tuple[str, int, int] | None:
    """The run the file names (boot id, pid, start time), or ``None`` when it names none."""
    raw = document.get("instance")
    if not isinstance(raw, dict):
        return None
    boot, pid, started = raw.get("boot_id"), raw.get("pid"), raw.get("started")
    if not isinstance(boot, str) or not isinstance(pid, int) or not isinstance(started, int):
        return None
    if isinstance(pid, bool) or isinstance(started, bool):  # JSON true is not a number
        return None
    return boot, pid, started


def is_running(boot: str, pid: int, started: int, proc_root: StrPath = PROC) -> bool:
    """Whether the run (``boot``, ``pid``, ``started``) is the vllmd running under ``pid`` now."""
    return (
        bool(boot)
        and started >= 0
        and boot_id(proc_root) == boot
        and start_time(pid, proc_root) == started
        and is_live_vllmd(pid, proc_root)
    )


def is_live_vllmd(pid: int, proc_root: StrPath = PROC) -> bool:
    """Whether ``pid`` is a running vllmd daemon (its command line names ``vllmd``).

    A zombie has an empty command line and does not count; neither does a ``vllmd health``
    process (one that reused a dead daemon's pid), nor this process itself.
    """
    if pid <= 0 or (pid == os.getpid() and proc_root == PROC):
        return False
    argv = cmdline(pid, proc_root) or []
    for position, arg in enumerate(argv):
        if arg == "vllmd" or os.path.basename(arg) == "vllmd":
            rest = [a for a in argv[position + 1 :] if not a.startswith("-")]
            return not rest or rest[0] != "health"
    return False


def health_text(document: Mapping[str, object]) -> str:
    """``vllmd health --text``: ``result: message``, then ``download: …`` while a fetch shows
    (``detail.fetch.message``: the old model may serve, with the new one's files coming)."""
    lines = [f"{document.get('result')}: {document.get('message')}"]
    detail = document.get("detail")
    fetch = detail.get("fetch") if isinstance(detail, dict) else None
    if isinstance(fetch, dict) and isinstance(fetch.get("message"), str):
        lines.append(f"download: {fetch['message']}")
    return "\n".join(lines)


def report(
    path: StrPath,
    *,
    text: bool = False,
    proc_root: StrPath = PROC,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print the health at ``path``; exit 0 on success, 1 otherwise, 2 unless the run that wrote
    it is running. With ``text``, ``RESULT: message`` instead of the JSON."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    document = read_health(path)
    if document is None:
        if os.path.exists(path):
            print(f"vllmd health: {path} does not hold a health report.", file=err)
        else:
            print(f"vllmd health: no health report at {path}; is the daemon running?", file=err)
        return EXIT_NO_DAEMON
    instance = instance_in(document)
    if instance is None:
        print(
            f"vllmd health: {path} names no daemon run (no instance identity); the report is "
            "stale or was not written by this vllmd.",
            file=err,
        )
        return EXIT_NO_DAEMON
    boot, pid, started = instance
    if not is_running(boot, pid, started, proc_root):
        print(
            f"vllmd health: the daemon that wrote {path} (pid {pid}, started at tick "
            f"{started} of boot {boot[:8] or 'unknown'}) is not running; the report is stale.",
            file=err,
        )
        return EXIT_NO_DAEMON
    if text:
        print(health_text(document), file=out)
    else:
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    return EXIT_SUCCESS if document.get("result") == "success" else EXIT_UNHEALTHY


def health_command(
    args: argparse.Namespace,
    settings: Settings,
    *,
    proc_root: StrPath = PROC,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``vllmd health`` from the parsed command line (:func:`report` on the settings' file)."""
    return report(
        settings.health_path,
        text=bool(getattr(args, "text", False)),
        proc_root=proc_root,
        stdout=stdout,
        stderr=stderr,
    )


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """``vllmd health`` without the command-line machinery, or None to leave it to the parser.

    ``argv`` is the command line after ``health``. Only the plain forms are taken here (the
    volumes' flags, ``--flag=VALUE`` or ``--flag VALUE``, and ``--text``); help, a mistake, an
    abbreviation or an empty value go to the full parser, which answers them as it always has.
    """
    given: dict[str, str] = {}
    text = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--text":
            text = True
            continue
        name, eq, value = arg.partition("=")
        spelling = next((s for s in _VOLUMES if s.flag == name), None)
        if spelling is None:
            return None
        if not eq:
            if not args:
                return None
            value = args.pop(0)
        if not value:
            return None
        given[spelling.flag] = value
    if any(environ.get(s.env) == "" for s in _VOLUMES):
        return None  # the parser says what is wrong with it
    run_dir = given.get(options.RUN_DIR.flag) or environ.get(options.RUN_DIR.env)
    folder = os.path.abspath(os.path.expanduser(run_dir or options.RUN_DIR.default))
    return report(os.path.join(folder, options.HEALTH_FILE), text=text)
