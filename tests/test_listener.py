"""A listener that is not our vLLM is never taken for it (issue 11, class 8).

Another program on vLLM's port answering ``/health`` with 200 made health say "ready" while our
vLLM crashed with ``Address already in use``. Success needs the listening socket to be held by
vLLM's process tree; a crash for a taken port says who holds it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Volumes, free_port, ipv6_loopback_bound, wait_for
from tests.test_probe import http_server
from vllmd.daemon.probe import Outcome, Prober
from vllmd.process.proc import listening_inodes, port_holders

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def bystander() -> Iterator[int]:
    """A process that is alive and is not the one listening."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


async def test_a_healthy_answer_counts_only_from_a_socket_our_tree_holds(bystander: int) -> None:
    # given: a server on the port that answers /health with 200, held by this process
    async with http_server([200]) as port:
        assert port_holders(port) == [os.getpid()]
        # when: the probe asks, with vLLM's tree being some other process
        async with Prober("127.0.0.1", port, owners=lambda: [bystander]) as prober:
            foreign = await prober.check()
        # then: not our vLLM listening, and the holder named
        assert foreign.outcome is Outcome.NOT_LISTENING
        assert f"pid {os.getpid()}" in foreign.reason
        # when: the tree is the holder
        async with Prober("127.0.0.1", port, owners=lambda: [bystander, os.getpid()]) as prober:
            ours = await prober.check()
        # then: healthy
        assert ours.ok


async def test_a_socket_proven_ours_is_not_proven_again_at_every_probe(bystander: int) -> None:
    # given: our tree holds the listening socket, and the probe has proven it once
    asked: list[int] = []

    def owners() -> list[int]:
        asked.append(1)
        return [bystander, os.getpid()]

    async with http_server([200]) as port, Prober("127.0.0.1", port, owners=owners) as prober:
        assert (await prober.check()).ok
        # when: it probes again and again (every 2 s once ready)
        for _ in range(5):
            assert (await prober.check()).ok
    # then: vLLM's processes were scanned once, not at every probe (an idle cost)
    assert len(asked) == 1


def test_listening_sockets_are_found_for_ipv4_and_ipv6() -> None:
    # given: listeners on one port, one per family (where IPv6 exists)
    port = free_port()
    with socket.socket() as v4:
        v4.bind(("127.0.0.1", port))
        v4.listen()
        assert len(listening_inodes(port)) == 1
        v6 = ipv6_loopback_bound(port)
        if v6 is None:
            return  # no IPv6 here
        with v6:
            v6.listen()
            # then: both are found, and this process holds them
            assert len(listening_inodes(port)) == 2
            assert port_holders(port) == [os.getpid()]


FOREIGN_SERVER = textwrap.dedent(
    """\
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


@pytest.fixture
def foreign_server(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Another program on a port, answering every GET with 200: (port, pid)."""
    port = free_port()
    script = tmp_path / "foreign.py"
    script.write_text(FOREIGN_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    wait_for(lambda: listening_inodes(port), 10, "the foreign server listening")
    yield port, proc.pid
    proc.kill()
    proc.wait()


def test_another_program_on_the_port_is_never_ready_and_the_crash_names_it(
    volumes: Volumes, start_daemon, foreign_server: tuple[int, int]
) -> None:
    # given: another program holds vLLM's port and answers 200 to everything
    port, holder = foreign_server
    volumes.set_args(*volumes.standin_args())
    # when: the daemon starts vLLM on that port (which cannot bind it)
    daemon = start_daemon(port=port)
    seen: list[str] = []

    def crashed() -> dict | None:
        health = volumes.health_json()
        if health:
            seen.append(health["result"])
        return health if health and health["detail"].get("phase") == "crashed" else None

    health = wait_for(crashed, 20, "the crash reported")
    # then: health never said ready, and the crash names the process that holds the port
    assert "success" not in seen
    assert f"pid {holder}" in health["message"]
    assert daemon.proc.poll() is None
