"""A listener that is not our vLLM is never taken for it (issue 11, class 8).

Another program on vLLM's port answering ``/health`` with 200 made health say "ready" while our
vLLM crashed with ``Address already in use``. Success needs the listening socket to be held by
vLLM's process tree; a crash for a taken port says who holds it.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from daemon_support import World

from tests.conftest import Volumes, free_port, ipv6_loopback_bound, wait_for
from tests.test_probe import http_server
from vllmd.core.health import Phase
from vllmd.daemon.probe import Outcome, Prober, ProbeResult, prove_ours
from vllmd.daemon.tasks import probe_vllm
from vllmd.process.proc import listening_inodes, port_holders, reached_inodes

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
        # when: the proof is asked with vLLM's tree being some other process
        foreign = await prove_ours(port, lambda: [bystander])
        # then: not our vLLM listening, and the holder named
        assert foreign.outcome is Outcome.NOT_LISTENING
        assert f"pid {os.getpid()}" in foreign.reason
        # when: the tree is the holder
        ours = await prove_ours(port, lambda: [bystander, os.getpid()])
        # then: healthy
        assert ours.ok


class Counted:
    """The real prober, counting its checks; ``fail_next`` checks answer NOT_LISTENING."""

    def __init__(self, prober: Prober) -> None:
        self.prober = prober
        self.asked = 0
        self.fail_next = 0

    async def check(self) -> ProbeResult:
        self.asked += 1
        if self.fail_next:
            self.fail_next -= 1
            return ProbeResult.NOT_LISTENING
        return await self.prober.check()


async def test_the_listener_is_proven_once_per_launch_and_again_after_a_failed_probe(
    tmp_path: Path, bystander: int
) -> None:
    # given: our vLLM (the reconciler's child) serves /health on a port this process holds
    world = World(tmp_path)
    world.select("org/a")
    await world.reconcile()
    proofs: list[int] = []

    def owners() -> list[int]:
        proofs.append(1)
        return [bystander, os.getpid()]

    async with http_server([200]) as port, anyio.create_task_group() as tg:
        prober = Counted(Prober("127.0.0.1", port))
        loop = functools.partial(probe_vllm, prober, port, world.reconciler, world.status,
                                 0.001, 0.001, owners=owners)  # fmt: skip
        tg.start_soon(loop)
        # when: it probes again and again once ready (every 2 s in the daemon)
        await until(lambda: world.phase is Phase.READY and prober.asked >= 10)
        # then: the owner was proven once, not at every probe (an idle cost)
        assert len(proofs) == 1
        # when: a probe fails, and the next answers 200 again
        prober.fail_next = 1
        asked = prober.asked
        await until(lambda: prober.asked >= asked + 10)
        # then: proven once more
        assert len(proofs) == 2
        # when: a new launch (another model) becomes ready
        first = world.supervisor.child
        world.clock.advance(5.0)
        world.select("org/b")
        await world.reconcile()
        assert world.supervisor.child is not first
        asked = prober.asked
        await until(lambda: world.phase is Phase.READY and prober.asked >= asked + 10)
        tg.cancel_scope.cancel()
    # then: its listener was proven too, once
    assert len(proofs) == 3


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition()``, checking every few ms, under a deadline."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


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


def test_the_listener_is_found_among_many_connections_on_its_port() -> None:
    # given: a listener and established connections to it (rows of the same local port)
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen(16)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            # then: exactly the listening socket is found, by either reader
            inode = os.fstat(server.fileno()).st_ino
            assert listening_inodes(port) == {inode}
            assert reached_inodes(port, ipv6=False) == {inode}
        finally:
            for s in clients + accepted:
                s.close()


def _table(rows: list[tuple[int, str, int]]) -> str:
    """A ``/proc/net/tcp`` text: (local port, state, inode) per row, under the kernel's header."""
    head = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
    )
    return head + "".join(
        f"{n:4}: 0100007F:{port:04X} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000"
        f"     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        for n, (port, st, inode) in enumerate(rows)
    )


def test_a_probe_over_ipv4_is_proven_against_the_ipv4_listener_before_a_dual_stack_one(
    tmp_path: Path,
) -> None:
    # given: tables as the kernel lists them, listening rows first, connections after
    net = tmp_path / "net"
    net.mkdir()
    (net / "tcp").write_text(_table([(8000, "0A", 11), (22, "0A", 12), (8000, "01", 13)]))
    (net / "tcp6").write_text(_table([(8000, "0A", 21), (8000, "06", 0)]))
    # then: IPv4 reaches the IPv4 listener alone; IPv6 the IPv6 one; both readers list both
    assert reached_inodes(8000, ipv6=False, proc_root=tmp_path) == {11}
    assert reached_inodes(8000, ipv6=True, proc_root=tmp_path) == {21}
    assert listening_inodes(8000, tmp_path) == {11, 21}
    # and: with no IPv4 listener, an IPv4 connection reaches the dual-stack IPv6 one
    (net / "tcp").write_text(_table([(22, "0A", 12), (8000, "01", 13)]))
    assert reached_inodes(8000, ipv6=False, proc_root=tmp_path) == {21}
    # and: a port nobody listens on has no listener, whatever its connections
    assert reached_inodes(9000, ipv6=False, proc_root=tmp_path) == set()


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
