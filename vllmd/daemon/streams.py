"""The daemon's own stdout and stderr, made non-blocking, with the log written to the new stderr.

A stuck log collector must not freeze the event loop (no key regeneration, no stop): both streams
become :class:`~vllmd.process.outstream.OutStream` s, and what they drop is logged, at once and
in total once the reader caught up.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from vllmd.core.choices import LogFormat
from vllmd.logs import setup_logging
from vllmd.process.outstream import OutStream

__all__ = ["daemon_streams"]

log = logging.getLogger("vllmd.daemon")  # the component name users see in logs


def daemon_streams(log_format: LogFormat) -> tuple[OutStream, OutStream]:
    """The daemon's stdout and stderr, never blocking the event loop (a stuck log collector
    must not freeze key regeneration or a stop); the log goes to the new stderr."""

    def dropped(name: str) -> Callable[[int, int, bool], None]:
        def report(writes: int, size: int, caught_up: bool) -> None:
            if caught_up:
                log.warning(
                    "dropped %d write(s), %d bytes, of output to %s while nobody read it",
                    writes,
                    size,
                    name,
                )
            else:
                log.warning(
                    "nobody reads %s: its output is dropped (and counted) until somebody does",
                    name,
                )

        return report

    out = OutStream(sys.stdout.fileno(), on_dropped=dropped("stdout"))
    err = OutStream(sys.stderr.fileno(), on_dropped=dropped("stderr"))
    setup_logging(log_format, write=err.write)
    return out, err
