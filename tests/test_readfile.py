"""The bounded state-file reader: anything that is not a small regular file is a clear refusal.

Class 2 of issue 11: a FIFO froze the event loop, a symlink to a device read until the memory
limit, a symlink loop or an unreadable file raised where nobody caught it. Each kind of path here
must come back at once, as :class:`UnreadableFile` naming the path, or as FileNotFoundError when
nothing is there at all.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vllmd.state.readfile import UnreadableFile, read_small_file


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _folder(path: Path) -> None:
    path.mkdir()


def _loop(path: Path) -> None:
    other = path.with_name("other")
    other.symlink_to(path.name)
    path.symlink_to(other.name)


def _dangling(path: Path) -> None:
    path.symlink_to("nowhere.json")


def _large(path: Path) -> None:
    path.write_bytes(b" " * 5000)


def _file_on_file(path: Path) -> None:
    path.parent.rename(path.parent.with_name("moved"))
    path.parent.write_text("a file where the folder was")


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    sockets: list[socket.socket] = []

    def make(path: Path) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        sockets.append(s)

    yield make
    for s in sockets:
        s.close()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_fifo, "FIFO"),
        (_device, "device"),
        (_folder, "folder"),
        (_loop, "loop of symbolic links"),
        (_dangling, "'nowhere.json', which does not exist"),
        (_large, "larger than 4,096 bytes"),
        (_file_on_file, "a folder on its path is a file"),
    ],
)
def test_a_path_that_is_not_a_small_regular_file_is_refused_at_once(
    tmp_path: Path, make: Callable[[Path], None], says: str
) -> None:
    # given: a state file's path holding something other than a small regular file
    folder = tmp_path / "vol"
    folder.mkdir()
    path = folder / "state.json"
    make(path)
    # when: it is read
    began = time.monotonic()
    with pytest.raises(UnreadableFile) as caught:
        read_small_file(path, 4096)
    # then: a refusal that names the path and what it is, without waiting for anything
    assert time.monotonic() - began < 1.0
    assert str(path) in caught.value.problem
    assert says in caught.value.problem
    assert caught.value.hint


def test_a_socket_is_refused(tmp_path: Path, unix_socket: Callable[[Path], None]) -> None:
    # given: a unix socket where a state file should be
    path = tmp_path / "s.json"
    unix_socket(path)
    # when/then: refused as a socket
    with pytest.raises(UnreadableFile, match="socket"):
        read_small_file(path, 4096)


def test_nothing_at_the_path_is_file_not_found(tmp_path: Path) -> None:
    # given/when/then: an absent file is absent, not unreadable
    with pytest.raises(FileNotFoundError):
        read_small_file(tmp_path / "absent.json", 4096)


def test_a_regular_file_within_the_cap_is_read_whole(tmp_path: Path) -> None:
    # given: a regular file exactly at the cap, and a symlink to it
    path = tmp_path / "state.json"
    path.write_bytes(b"x" * 4096)
    link = tmp_path / "link.json"
    link.symlink_to(path.name)
    # when/then: both read in full
    assert read_small_file(path, 4096) == b"x" * 4096
    assert read_small_file(link, 4096) == b"x" * 4096


def _drop_capabilities() -> None:
    """Clear this process's capabilities (root keeps uid 0 but loses CAP_DAC_OVERRIDE)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    libc = ctypes.CDLL(None, use_errno=True)
    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _read_in_child(path: Path, prepare: Callable[[], None]) -> str:
    """What read_small_file says about ``path`` in a forked child after ``prepare()``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            prepare()
            try:
                read_small_file(path, 4096)
                said = "read"
            except UnreadableFile as exc:
                said = exc.problem
            os.write(write_end, said.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


def test_an_unreadable_file_is_refused_with_permission_denied(tmp_path: Path) -> None:
    # given: a file its reader may not read (as root: read without root's capabilities, as
    # under a rootless runtime)
    path = tmp_path / "state.json"
    path.write_text("{}")
    path.chmod(0o000)
    prepare = _drop_capabilities if os.geteuid() == 0 else (lambda: None)
    # when: it is read
    said = _read_in_child(path, prepare)
    # then: a refusal that says why
    assert "permission denied" in said
