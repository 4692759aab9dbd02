"""Log lines on stderr: ``LEVEL component: message``, or one JSON object per line.

Every record passes through the process-wide masker before it is formatted, so a key can reach a
log call by mistake and still never reach the stream; and its control characters are escaped, so
one event stays one line whatever the values in it hold (a newline in a serve argument cannot
forge a line of ours).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from typing import TextIO

import msgspec

from vllmd.core.choices import LogFormat
from vllmd.core.escape import json_one_line, one_line
from vllmd.core.masking import masker

_json = msgspec.json.Encoder()


def _component(name: str) -> str:
    """The component a log line names: the last part of the logger's module path.

    Modules whose folder says the role better than their file (``vllmd.daemon.serve``) log under
    the folder's name instead, so the names users see stayed stable when the package grew folders.
    """
    return name.rsplit(".", 1)[-1]


_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


def _timestamp(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created * 1000) % 1000:03d}Z"
    )


def vllm_line_json(
    stream: str, line: str, created: float | None = None, component: str = "vllm"
) -> bytes:
    """One line of vLLM's output (or of another child: ``component``) as a JSON log object (for
    ``--log-format json``), masked.

    The level is the one vLLM's own header names near the start of the line, else ``INFO``.
    """
    match = _LEVEL.search(line, 0, 80)
    entry = {
        "time": _timestamp(time.time() if created is None else created),
        "level": match[1] if match else "INFO",
        "component": component,
        "stream": stream,
        "message": masker.mask(line),
    }
    return json_one_line(_json.encode(entry).decode()).encode() + b"\n"


class TextFormatter(logging.Formatter):
    """``INFO daemon: message``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as one masked line."""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return one_line(masker.mask(f"{record.levelname} {_component(record.name)}: {message}"))


class JsonFormatter(logging.Formatter):
    """``{"time": …, "level": …, "component": …, "message": …}``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as one masked JSON object."""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        line = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "component": _component(record.name),
            "message": masker.mask(message),
        }
        return json_one_line(_json.encode(line).decode())


class _WriteHandler(logging.Handler):
    """Hands each formatted record, as one line of bytes, to ``write`` (which must not block)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        super().__init__()
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and write it."""
        try:
            self._write(self.format(record).encode(errors="replace") + b"\n")
        except Exception:
            self.handleError(record)


def setup_logging(
    log_format: LogFormat = "text",
    stream: TextIO | None = None,
    *,
    write: Callable[[bytes], None] | None = None,
) -> None:
    """Send vllmd's log records to ``stream`` (stderr), or to ``write``, in the chosen format.

    The daemon passes ``write`` (its non-blocking stderr) so that a log line never blocks the
    event loop when nobody reads the stream.
    """
    handler: logging.Handler = (
        _WriteHandler(write) if write is not None else logging.StreamHandler(stream or sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("vllmd")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
