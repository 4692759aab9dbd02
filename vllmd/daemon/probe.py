"""Is vLLM's API up? A TCP connect to its port, then ``GET /health``.

vLLM binds its port before it loads the model but accepts connections only once loaded, so a
refused connection means "still loading" (or "gone"), not "broken". Once the port accepts,
``/health`` answers 200 when the engine is fine and 503 when it died; a hang is a failure too.

Each check is one fresh connection and one ``GET /health`` written by hand over it (HTTP/1.1,
``Connection: close``; only the status line is read): an HTTP client library would cost the
daemon 13.5 MB of memory for one request every two seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

import anyio
from anyio.abc import SocketStream

from vllmd.process.proc import describe, port_holders, reached_inodes, socket_inodes

__all__ = [
    "READY_INTERVAL_S",
    "STARTING_INTERVAL_S",
    "Outcome",
    "ProbeResult",
    "Prober",
    "StartupHint",
    "loopback_host",
    "prove_ours",
]

STARTING_INTERVAL_S = 0.25
"""Probe cadence while vLLM loads: readiness is noticed within 0.5 s of the port listening."""
READY_INTERVAL_S = 2.0
"""Probe cadence once ready: with :data:`vllmd.core.readiness.FAILURES_TO_WEDGE`, a dead API
is noticed in seconds."""
STARTUP_LINE = "Application startup complete."
"""What uvicorn prints under vLLM 0.32 once its app is up, just before its socket listens."""
HINT_RETRY_S = 0.002
"""After that line, probe this often (the socket listens a moment after it)..."""
HINT_WINDOW_S = 2.0
"""...for this long; then the periodic probe again, which stays the truth either way."""


class Outcome(StrEnum):
    """What one probe found."""

    HEALTHY = "healthy"
    """``GET /health`` answered 200."""
    UNHEALTHY = "unhealthy"
    """``GET /health`` answered another status (503: the engine died)."""
    NOT_LISTENING = "not-listening"
    """The connection was refused: vLLM is loading, or gone."""
    NO_ANSWER = "no-answer"
    """The port accepted but no answer came in time, or the connection broke."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome, with the HTTP status when there was one.

    ``ProbeResult.HEALTHY``, ``ProbeResult.NOT_LISTENING`` and ``ProbeResult.NO_ANSWER`` are the
    common values; compare with ``==`` (``reason`` is a note for logs and is not compared).
    """

    outcome: Outcome
    status: int | None = None
    reason: str = field(default="", compare=False)

    HEALTHY: ClassVar[ProbeResult]
    NOT_LISTENING: ClassVar[ProbeResult]
    NO_ANSWER: ClassVar[ProbeResult]

    @property
    def ok(self) -> bool:
        """Whether vLLM's API is up and healthy."""
        return self.outcome is Outcome.HEALTHY

    def __str__(self) -> str:
        text = str(self.outcome)
        if self.status is not None:
            text = f"{text} (HTTP {self.status})"
        return f"{text}: {self.reason}" if self.reason else text


ProbeResult.HEALTHY = ProbeResult(Outcome.HEALTHY, 200)
ProbeResult.NOT_LISTENING = ProbeResult(Outcome.NOT_LISTENING)
ProbeResult.NO_ANSWER = ProbeResult(Outcome.NO_ANSWER)


class StartupHint:
    """vLLM's word that its API is up: a hint to probe at once, never a verdict.

    :meth:`feed` takes each line vLLM prints (from the output pumps); the probe loop asks
    :meth:`since` whether the line came for the vLLM it probes, and waits in :meth:`wait`
    between probes so that the line wakes it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._event = anyio.Event()
        self.at: float | None = None
        """When the line last came (the clock's time)."""

    def feed(self, line: str) -> None:
        """Look at one line of vLLM's output."""
        if STARTUP_LINE in line:
            self.at = self._clock()
            self._event.set()

    def since(self, started_at: float) -> float | None:
        """When the line came, if it came after ``started_at`` (the vLLM now probed started)."""
        return self.at if self.at is not None and self.at >= started_at else None

    async def wait(self) -> None:
        """Return at the next line (a line already seen is forgotten first)."""
        if self._event.is_set():
            self._event = anyio.Event()
        await self._event.wait()


def loopback_host(host: str) -> str:
    """The address to reach a server listening on ``host`` (a wildcard becomes loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


class Prober:
    """Checks vLLM's API at ``host:port``.

    Args:
        host: vLLM's listen host; ``0.0.0.0`` is probed on ``127.0.0.1`` and ``::`` on ``::1``.
        port: vLLM's listen port.
        connect_timeout_s: how long the TCP connect may take.
        request_timeout_s: how long ``GET /health`` may take, from connect to the last byte.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float = 0.5,
        request_timeout_s: float = 2.0,
    ) -> None:
        self.host = loopback_host(host)
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self._request = (
            f"GET /health HTTP/1.1\r\nHost: {netloc}:{port}\r\nUser-Agent: vllmd-probe\r\n"
            "Connection: close\r\n\r\n"
        ).encode()

    async def check(self) -> ProbeResult:
        """Probe once: connect, then ``GET /health``. Never raises for a network failure."""
        try:
            with anyio.fail_after(self.connect_timeout_s):
                stream = await anyio.connect_tcp(self.host, self.port)
        except TimeoutError:
            # On loopback a refused connect is instant; one that hangs means a full backlog,
            # a server that listens but never accepts.
            return ProbeResult(Outcome.NO_ANSWER, reason="the connection was not accepted in time")
        except OSError as exc:  # refused, or the address is not there (no IPv6, say)
            return ProbeResult(Outcome.NOT_LISTENING, reason=_reason(exc))
        async with stream:
            return await self._get_health(stream)

    async def _get_health(self, stream: SocketStream) -> ProbeResult:
        try:
            with anyio.fail_after(self.request_timeout_s):
                await stream.send(self._request)
                head = await _status_line(stream)
        except TimeoutError:
            return ProbeResult(Outcome.NO_ANSWER, reason="no answer to GET /health in time")
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:  # reset, closed
            return ProbeResult(Outcome.NO_ANSWER, reason=_reason(exc))
        match = _STATUS.match(head)
        if match is None:
            shown = head[:60].decode("ascii", "replace")
            return ProbeResult(Outcome.NO_ANSWER, reason=f"not an HTTP answer: {shown!r}")
        status = int(match[1])
        if status == 200:
            return ProbeResult.HEALTHY
        return ProbeResult(Outcome.UNHEALTHY, status, reason=f"GET /health answered {status}")


async def prove_ours(
    port: int, owners: Callable[[], Iterable[int]], *, ipv6: bool = False
) -> ProbeResult:
    """Whether the socket listening on ``port`` that a probe over IPv4 (or ``ipv6``) reaches is
    held by one of ``owners()`` (our vLLM's process tree): HEALTHY when it is, or when no listener
    is visible (no ``/proc/net/tcp`` here: cannot tell); else NOT_LISTENING naming the holder
    (another program answering 200 on the port is not our vLLM).

    The owner of a listening socket cannot change while it is held, so the probe loop asks this
    once per launch, at its first 200, and again only after a failed probe. It reads ``/proc``
    (the whole socket table, and every process when the holder is not ours), in a worker thread.
    """
    holder = await anyio.to_thread.run_sync(_foreign_holder, port, owners, ipv6)
    if holder is None:
        return ProbeResult.HEALTHY
    return ProbeResult(
        Outcome.NOT_LISTENING,
        reason=f"port {port} answers, but it is held by {holder}, not by our vLLM",
    )


def _foreign_holder(port: int, owners: Callable[[], Iterable[int]], ipv6: bool) -> str | None:
    inodes = reached_inodes(port, ipv6)
    if not inodes:
        return None
    for pid in owners():
        if socket_inodes(pid) & inodes:
            return None
    return ", ".join(describe(pid) for pid in port_holders(port)) or "another process"


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")
_HEAD_MAX = 8_192
"""A status line longer than this is not an answer from vLLM's server."""


async def _status_line(stream: SocketStream) -> bytes:
    """The bytes up to the end of the answer's status line (all there is, at most)."""
    data = b""
    while b"\r\n" not in data and len(data) < _HEAD_MAX:
        try:
            data += await stream.receive(_HEAD_MAX)
        except anyio.EndOfStream:
            if not data:
                raise
            break
    return data


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
