"""The probe against tiny servers on loopback: healthy, 503, silent, gone, not listening."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio
import pytest
from aiohttp import web
from anyio.abc import SocketAttribute, SocketStream

from tests.conftest import ipv6_loopback_bound
from vllmd.daemon.probe import Outcome, Prober, ProbeResult, StartupHint, loopback_host

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def http_server(status: list[int], sock: socket.socket | None = None) -> AsyncIterator[int]:
    """An aiohttp server on a free loopback port (or on ``sock``, bound) whose ``/health`` answers
    ``status[0]``."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=status[0], text="")

    app = web.Application()
    app.router.add_get("/health", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts connections and never answers."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(SocketAttribute.local_port)
        tg.cancel_scope.cancel()
    await listener.aclose()


@contextmanager
def bound_not_listening() -> Iterator[int]:
    """A port that is bound but not listening, as vLLM's is while it loads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_a_listening_vllm_answering_200_is_healthy() -> None:
    async with http_server([200]) as port:
        result = await Prober("127.0.0.1", port).check()

    assert result == ProbeResult.HEALTHY
    assert result.ok
    assert result.status == 200


async def test_a_503_is_unhealthy_and_keeps_the_status() -> None:
    async with http_server([503]) as port:
        result = await Prober("127.0.0.1", port).check()

    assert result.outcome is Outcome.UNHEALTHY
    assert result.status == 503
    assert not result.ok


async def test_each_check_sees_the_current_answer() -> None:
    status = [200]
    async with http_server(status) as port:
        probe = Prober("127.0.0.1", port)
        first = await probe.check()
        status[0] = 503
        second = await probe.check()
        status[0] = 200
        third = await probe.check()

    assert [first.outcome, second.outcome, third.outcome] == [
        Outcome.HEALTHY,
        Outcome.UNHEALTHY,
        Outcome.HEALTHY,
    ]


async def test_a_server_that_never_answers_is_no_answer_within_the_timeout() -> None:
    async with silent_server() as port:
        probe = Prober("127.0.0.1", port, request_timeout_s=0.3)
        started = time.monotonic()
        with anyio.fail_after(5):
            result = await probe.check()
        elapsed = time.monotonic() - started

    assert result == ProbeResult.NO_ANSWER
    assert elapsed < 1.5


async def test_a_bound_but_not_listening_port_is_not_listening() -> None:
    with bound_not_listening() as port, anyio.fail_after(5):
        result = await Prober("127.0.0.1", port).check()

    assert result == ProbeResult.NOT_LISTENING


async def test_a_vllm_that_went_away_after_ready_is_noticed() -> None:
    async with http_server([200]) as port:
        probe = Prober("127.0.0.1", port)
        ready = await probe.check()
    with anyio.fail_after(5):
        gone = await probe.check()

    assert (ready.outcome, gone.outcome) == (Outcome.HEALTHY, Outcome.NOT_LISTENING)


async def test_a_wildcard_host_is_probed_on_loopback() -> None:
    async with http_server([200]) as port:  # on 127.0.0.1 only
        result = await Prober("0.0.0.0", port).check()

    assert result == ProbeResult.HEALTHY


async def test_an_ipv6_wildcard_is_probed_on_ipv6_loopback() -> None:
    # given: a server on [::1] only (the request's Host header brackets the address)
    sock = ipv6_loopback_bound(0)
    if sock is None:
        pytest.skip("no IPv6 on this machine")
    async with http_server([200], sock) as port:
        # when: vLLM's host is the IPv6 wildcard
        result = await Prober("::", port).check()
    # then: it is reached, and answers
    assert result == ProbeResult.HEALTHY


async def test_an_answer_that_is_not_http_is_no_answer() -> None:
    async def handle(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        with anyio.fail_after(5):
            result = await Prober("127.0.0.1", listener.extra(SocketAttribute.local_port)).check()
        tg.cancel_scope.cancel()
    await listener.aclose()

    assert result.outcome is Outcome.NO_ANSWER
    assert "not an HTTP answer" in result.reason


async def test_a_server_that_closes_without_answering_is_no_answer() -> None:
    async def handle(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        with anyio.fail_after(5):
            result = await Prober("127.0.0.1", listener.extra(SocketAttribute.local_port)).check()
        tg.cancel_scope.cancel()
    await listener.aclose()

    assert result.outcome is Outcome.NO_ANSWER


def test_the_probe_loads_no_http_client_library() -> None:
    # The daemon's idle memory: aiohttp alone was 13.5 MB of the 41 MB (issue 14).
    code = "import sys, vllmd.daemon.probe; print('aiohttp' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("host", "probed"),
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "::1"), ("10.0.0.5", "10.0.0.5")],
)
def test_loopback_host(host: str, probed: str) -> None:
    assert loopback_host(host) == probed


def test_a_result_reads_well_in_a_log_line() -> None:
    result = ProbeResult(Outcome.UNHEALTHY, 503, reason="GET /health answered 503")

    assert str(result) == "unhealthy (HTTP 503): GET /health answered 503"
    assert result == ProbeResult(Outcome.UNHEALTHY, 503)  # the reason is not compared


async def test_the_startup_line_is_a_hint_for_the_vllm_started_before_it() -> None:
    now = [100.0]
    hint = StartupHint(clock=lambda: now[0])
    hint.feed("INFO:     Waiting for application startup.")
    assert hint.since(0.0) is None  # not the line
    hint.feed("INFO:     Application startup complete.")
    assert hint.since(99.0) == 100.0
    assert hint.since(100.5) is None  # a vLLM started after the line: not its hint


async def test_waiting_for_the_hint_returns_at_the_next_line_only() -> None:
    hint = StartupHint()
    hint.feed("INFO:     Application startup complete.")
    with anyio.move_on_after(0.05) as waited:
        await hint.wait()  # the line already seen does not count again
    assert waited.cancelled_caught
    with anyio.fail_after(2):  # the wait returns at the new line, or this fails
        async with anyio.create_task_group() as tg:
            tg.start_soon(hint.wait)
            await anyio.sleep(0.01)
            hint.feed("INFO:     Application startup complete.")
