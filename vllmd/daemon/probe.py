"""Is vLLM's API up? A TCP connect to its port, then ``GET /health``.

vLLM binds its port before it loads the model but accepts connections only once loaded, so a
refused connection means "still loading" (or "gone"), not "broken". Once the port accepts,
``/health`` answers 200 when the engine is fine and 503 when it died; a hang is a failure too.

The prober keeps one :class:`aiohttp.ClientSession` (one kept-alive connection) for its whole
life; close it with :meth:`Prober.aclose` or use it as an async context manager. It needs the
asyncio backend of anyio (aiohttp runs on asyncio).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import aiohttp
import anyio

from vllmd.process.proc import PROC, describe, listening_inodes, port_holders, socket_inodes

__all__ = [
    "FAILURES_TO_WEDGE",
    "READY_INTERVAL_S",
    "STARTING_INTERVAL_S",
    "Outcome",
    "ProbeResult",
    "Prober",
    "loopback_host",
]

STARTING_INTERVAL_S = 0.25
"""Probe cadence while vLLM loads: readiness is noticed within 0.5 s of the port listening."""
READY_INTERVAL_S = 2.0
"""Probe cadence once ready: with :data:`FAILURES_TO_WEDGE`, a dead API is noticed in seconds."""
FAILURES_TO_WEDGE = 3
"""Failed probes in a row, after ready and with the process alive, that make vLLM wedged."""


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
        owners: the pids of our vLLM's process tree, asked on each healthy answer; the answer
            counts only when one of them holds the listening socket (another program on the
            port answering 200 is not our vLLM). ``None`` skips the check.
        proc_root: where ``/proc`` is, for the ownership check.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float = 0.5,
        request_timeout_s: float = 2.0,
        owners: Callable[[], Iterable[int]] | None = None,
        proc_root: Path = PROC,
    ) -> None:
        self.host = loopback_host(host)
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{netloc}:{port}/health"
        self._session: aiohttp.ClientSession | None = None
        self._owners = owners
        self._proc_root = proc_root

    async def check(self) -> ProbeResult:
        """Probe once: connect, then ``GET /health``. Never raises for a network failure."""
        listening = await self._connect()
        if listening is not None:
            return listening
        result = await self._get_health()
        if result.ok and self._owners is not None:
            return self._ours(result)
        return result

    def _ours(self, result: ProbeResult) -> ProbeResult:
        """``result``, or NOT_LISTENING when the socket on the port belongs to someone else."""
        inodes = listening_inodes(self.port, self._proc_root)
        if not inodes:
            return result  # /proc/net/tcp unreadable or in another namespace: cannot tell
        assert self._owners is not None
        for pid in self._owners():
            if socket_inodes(pid, self._proc_root) & inodes:
                return result
        holders = [pid for pid in port_holders(self.port, self._proc_root)]
        who = ", ".join(describe(pid, self._proc_root) for pid in holders) or "another process"
        return ProbeResult(
            Outcome.NOT_LISTENING,
            reason=f"port {self.port} answers, but it is held by {who}, not by our vLLM",
        )

    async def _connect(self) -> ProbeResult | None:
        """``None`` when the port accepts a connection, else why not."""
        try:
            with anyio.fail_after(self.connect_timeout_s):
                stream = await anyio.connect_tcp(self.host, self.port)
        except TimeoutError:
            # On loopback a refused connect is instant; one that hangs means a full backlog,
            # a server that listens but never accepts.
            return ProbeResult(Outcome.NO_ANSWER, reason="the connection was not accepted in time")
        except OSError as exc:  # refused, or the address is not there (no IPv6, say)
            return ProbeResult(Outcome.NOT_LISTENING, reason=_reason(exc))
        with contextlib.suppress(OSError):
            await stream.aclose()
        return None

    async def _get_health(self) -> ProbeResult:
        session = self._get_session()
        try:
            with anyio.fail_after(self.request_timeout_s):
                async with session.get(self.url, allow_redirects=False) as response:
                    await response.read()
                    status = response.status
        except TimeoutError:
            return ProbeResult(Outcome.NO_ANSWER, reason="no answer to GET /health in time")
        except aiohttp.ClientConnectorError as exc:  # went away between the two steps
            return ProbeResult(Outcome.NOT_LISTENING, reason=_reason(exc))
        except (aiohttp.ClientError, OSError) as exc:  # reset, disconnected, garbled
            return ProbeResult(Outcome.NO_ANSWER, reason=_reason(exc))
        if status == 200:
            return ProbeResult.HEALTHY
        return ProbeResult(Outcome.UNHEALTHY, status, reason=f"GET /health answered {status}")

    def _get_session(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=1, family=_family(self.host), use_dns_cache=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self.request_timeout_s, sock_connect=self.connect_timeout_s
                ),
                trust_env=False,  # never through an HTTP proxy from the environment
            )
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _family(host: str) -> socket.AddressFamily:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return socket.AF_UNSPEC  # a name: let the resolver decide
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
