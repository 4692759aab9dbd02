"""Log lines on stderr: ``LEVEL component: message``, or one JSON object per line.

Every record passes through the process-wide masker before it is formatted, so a key can reach a
log call by mistake and still never reach the stream.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import msgspec

from vllmd.masking import masker

_json = msgspec.json.Encoder()


def _component(name: str) -> str:
    return name.removeprefix("vllmd.") if name != "vllmd" else "vllmd"


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
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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
