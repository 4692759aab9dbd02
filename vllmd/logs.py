"""Log lines on stderr: ``LEVEL component: message``, or one JSON object per line.

Every record passes through the process-wide masker before it is formatted, so a key can reach a
log call by mistake and still never reach the stream.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import TextIO

import msgspec

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


def vllm_line_json(stream: str, line: str, created: float | None = None) -> bytes:
    """One line of vLLM's output as a JSON log object (for ``--log-format json``), masked.

    The level is the one vLLM's own header names near the start of the line, else ``INFO``.
    """
    match = _LEVEL.search(line, 0, 80)
    entry = {
        "time": _timestamp(time.time() if created is None else created),
        "level": match[1] if match else "INFO",
        "component": "vllm",
        "stream": stream,
        "message": masker.mask(line),
    }
    return _json.encode(entry) + b"\n"


class TextFormatter(logging.Formatter):
    """``INFO daemon: message``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as one masked line."""
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return masker.mask(f"{record.levelname} {_component(record.name)}: {message}")


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
        return _json.encode(line).decode()


def setup_logging(log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send vllmd's log records to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("vllmd")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
