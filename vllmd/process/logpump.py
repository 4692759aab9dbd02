"""Pass vLLM's output through to ours, masked, whatever the length of its lines.

asyncio's ``readline`` fails on lines over 64 KiB, and tqdm draws progress bars with ``\\r``: so we
read chunks, cut them at ``\\n`` or ``\\r``, flush an endless line in pieces, keeping a short tail
back so that a key split across two reads is still masked. Control bytes other than the line ends
are escaped on the way (a terminal escape in vLLM's output cannot rewrite what was shown).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import BinaryIO

import anyio

from vllmd.core.escape import safe_output
from vllmd.core.masking import masker

CHUNK = 65_536
HOLD_BACK = 64  # longer than any key, so a key is always whole in what we mask


class LinePump:
    """Splits a byte stream into masked pieces for ``sink`` and lines for ``on_line``.

    ``on_line`` gets every line without its end (``\n`` and ``\r`` both end one), and a line
    longer than :data:`CHUNK` in pieces.
    """

    def __init__(self, sink: Callable[[bytes], None], on_line: Callable[[str], None]) -> None:
        self._sink = sink
        self._on_line = on_line
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        """Take ``data`` from the stream; emit what is complete."""
        buffer = masker.mask_bytes(self._buffer + data)
        cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r"))
        if cut >= 0:
            done, buffer = buffer[: cut + 1], buffer[cut + 1 :]
            self._emit(done)
            for line in done.replace(b"\r", b"\n").split(b"\n")[:-1]:
                if line:
                    self._on_line(line.decode(errors="replace"))
        if len(buffer) > CHUNK:
            # Keep back more than the longest secret (a long serveEnv value too), so that one
            # split across two reads is still masked whole.
            hold = max(HOLD_BACK, masker.longest + 1)
            piece, buffer = buffer[:-hold], buffer[-hold:]
            self._emit(piece)
            self._on_line(piece.decode(errors="replace"))  # a piece of an endless line
        self._buffer = buffer

    def close(self) -> None:
        """The stream ended: emit what is left."""
        if self._buffer:
            rest = masker.mask_bytes(self._buffer)
            self._buffer = b""
            self._emit(rest)
            self._on_line(rest.decode(errors="replace").strip("\r\n"))

    def _emit(self, data: bytes) -> None:
        self._sink(safe_output(data))


def stream_sink(stream: BinaryIO) -> Callable[[bytes], None]:
    """A sink that writes to ``stream`` and flushes, ignoring a closed stream."""

    def write(data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):  # our own stdout closed: keep running
            stream.write(data)
            stream.flush()

    return write


async def pump(fd: int, line_pump: LinePump) -> None:
    """Read ``fd`` until end of file into ``line_pump``, then close ``fd``."""
    os.set_blocking(fd, False)
    try:
        while True:
            await anyio.wait_readable(fd)
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                continue
            if not data:
                break
            line_pump.feed(data)
    finally:
        line_pump.close()
        os.close(fd)
