"""Listening sockets asked of the kernel over netlink agree with /proc/net/tcp{,6} (issue 14:
the text tables cost 16 ms a read, at every probe that checks whose socket answered)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import free_port, ipv6_loopback_bound
from vllmd.process import sockdiag
from vllmd.process.proc import listening_inodes

THROUGH_PROC = Path("/proc/self/..")
"""The real /proc under another name: proc.listening_inodes then reads the text tables."""


def test_netlink_finds_the_listeners_proc_finds_for_ipv4_and_ipv6() -> None:
    port = free_port()
    with socket.socket() as v4:
        v4.bind(("127.0.0.1", port))
        assert sockdiag.listening_inodes(port) == set()  # bound, not listening: nothing
        v4.listen()
        found = sockdiag.listening_inodes(port)
        if found is None:
            pytest.skip("netlink sock_diag is refused here")
        assert len(found) == 1 and found == listening_inodes(port, THROUGH_PROC)
        v6 = ipv6_loopback_bound(port)
        if v6 is None:
            return  # no IPv6 here
        with v6:
            v6.listen()
            both = sockdiag.listening_inodes(port)
            assert both is not None and len(both) == 2
            assert both == listening_inodes(port, THROUGH_PROC) == listening_inodes(port)


def test_a_listener_on_another_port_is_not_counted() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = free_port()
        assert sockdiag.listening_inodes(port) in (set(), None)
