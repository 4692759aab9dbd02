"""Reading ``/proc``: the kernel's view of processes, for the daemon, ``vllmd health`` and bench.

Standard library only, and no reader blocks: ``vllmd health`` (a container HEALTHCHECK, run every
few seconds) imports this module. Every reader takes ``proc_root`` so that tests lay out a fake
``/proc``; a process that is gone, or a file that cannot be read, reads as ``None``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing's own would cost `vllmd health` what it saves
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]

PROC = "/proc"
"""The kernel's process tables; every reader takes another root for tests (a str or a Path)."""


def stat_fields(text: str) -> list[str]:
    """The fields of a ``/proc/PID/stat`` line after the command name, so that ``fields[0]`` is
    field 3 (the state) of proc(5).

    The command name is in parentheses and may itself contain spaces and parentheses: it ends at
    the last ``)``.
    """
    return text[text.rindex(")") + 2 :].split()


_READ_CAP = 64 * 1024
"""More than any ``stat``, ``status`` or ``cmdline`` file vllmd reads holds."""


def read_bytes(path: StrPath) -> bytes | None:
    """The start of a ``/proc`` file (at most 64 KiB), or ``None`` when it cannot be read.

    ``/proc`` files are generated on read and never block; one ``read`` call sees one
    consistent snapshot of a small file, which ``Path.read_bytes``'s size-then-read does not
    promise.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, _READ_CAP)
    except OSError:
        return None
    finally:
        os.close(fd)


def stat(pid: int, proc_root: StrPath = PROC) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` from field 3 (the state) on, or ``None`` when gone."""
    data = read_bytes(os.path.join(proc_root, str(pid), "stat"))
    if not data:
        return None
    try:
        return stat_fields(data.decode(errors="replace"))
    except ValueError:  # no ")": not a stat line
        return None


def status(
    pid: int, proc_root: StrPath = PROC, *, thread: int | None = None
) -> dict[str, str] | None:
    """``/proc/PID/status`` (of one ``thread`` of it, if given) as name to value; ``None`` when
    gone."""
    where = (
        os.path.join(proc_root, str(pid))
        if thread is None
        else os.path.join(proc_root, str(pid), "task", str(thread))
    )
    data = read_bytes(os.path.join(where, "status"))
    if data is None:
        return None
    found: dict[str, str] = {}
    for line in data.decode(errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            found[name] = value.strip()
    return found


def cmdline(pid: int, proc_root: StrPath = PROC) -> list[str] | None:
    """The arguments ``pid`` runs with (empty for a zombie or a kernel thread), or ``None``."""
    data = read_bytes(os.path.join(proc_root, str(pid), "cmdline"))
    if data is None:
        return None
    return [arg.decode(errors="replace") for arg in data.split(b"\0") if arg]


def pids(proc_root: StrPath = PROC) -> list[int]:
    """Every process id ``/proc`` shows now (empty when it cannot be listed)."""
    try:
        return [int(name) for name in os.listdir(proc_root) if name.isdigit()]
    except OSError:
        return []


def threads(pid: int, proc_root: StrPath = PROC) -> list[int]:
    """The thread ids of ``pid`` (empty when it is gone)."""
    try:
        return [
            int(name)
            for name in os.listdir(os.path.join(proc_root, str(pid), "task"))
            if name.isdigit()
        ]
    except OSError:
        return []


def is_alive(pid: int, proc_root: StrPath = PROC) -> bool:
    """Whether ``pid`` is a live process: it exists and is not a zombie (``Z``) or dead (``X``)."""
    fields = stat(pid, proc_root)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgid: int, proc_root: StrPath = PROC) -> list[int]:
    """Pids of the live processes in group ``pgid`` (zombies hold no memory: they do not count)."""
    members: list[int] = []
    for pid in pids(proc_root):
        fields = stat(pid, proc_root)
        if fields is None or len(fields) < 3:
            continue  # exited while we looked
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(pid)
    return members


def descendants(pid: int, proc_root: StrPath = PROC) -> list[int]:
    """Pids of the live descendants of ``pid``, at any depth, whatever their group or session.

    A process that calls ``setsid`` leaves its group but not its ancestry; as a subreaper (or
    PID 1) the daemon adopts every orphan below it, so its descendants are all that it started.
    """
    children: dict[int, list[int]] = {}
    alive: set[int] = set()
    for other in pids(proc_root):
        fields = stat(other, proc_root)
        if fields is None or len(fields) < 2:
            continue  # exited while we looked
        try:
            children.setdefault(int(fields[1]), []).append(other)
        except ValueError:
            continue
        if fields[0] not in ("Z", "X"):
            alive.add(other)
    found: list[int] = []
    stack = list(children.get(pid, ()))
    while stack:
        child = stack.pop()
        if child in alive:
            found.append(child)
        stack.extend(children.get(child, ()))  # a zombie's children are re-parented already
    return sorted(found)


def start_time(pid: int, proc_root: StrPath = PROC) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of ``/proc/PID/stat``).

    With the boot id it names one process for good: a pid is reused, a start time within one
    boot is not.
    """
    fields = stat(pid, proc_root)
    try:
        return None if fields is None else int(fields[19])  # field 22; fields[0] is field 3
    except (ValueError, IndexError):
        return None


def boot_id(proc_root: StrPath = PROC) -> str | None:
    """This boot's random id (``/proc/sys/kernel/random/boot_id``), or ``None`` when unreadable."""
    data = read_bytes(os.path.join(proc_root, "sys", "kernel", "random", "boot_id"))
    text = data.decode(errors="replace").strip() if data else ""
    return text or None


_TCP_LISTEN = b"0A"
_TABLES = ("tcp", "tcp6")
_TABLE_READ = 1024
"""Bytes per read of a socket table: the kernel builds it as it is read, a few rows at a time."""


def _listening_in(table: StrPath, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` in one table (``/proc/net/tcp`` or ``tcp6``).

    The kernel lists the listening sockets first (it walks its listening hash before the
    established one), so the read stops at the first row that does not listen: the rest of the
    table, every connection of the host, is never built (0.4 ms against 7 ms for the whole of it
    on a host with a large hash). ``local_address`` is ``HEXIP:HEXPORT``, ``st`` 0A is LISTEN,
    and the tenth column is the socket's inode.
    """
    found: set[int] = set()
    try:
        fd = os.open(table, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return found
    try:
        rest, header = b"", True
        while chunk := os.read(fd, _TABLE_READ):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                fields = line.split()
                if header or len(fields) < 10:
                    header = False
                    continue
                if fields[3] != _TCP_LISTEN:
                    return found
                try:
                    if int(fields[1].rsplit(b":", 1)[1], 16) == port:
                        found.add(int(fields[9]))
                except (IndexError, ValueError):
                    continue
            if len(rest) > 1 << 16:  # no row is this long: not a socket table
                break
    except OSError:
        pass
    finally:
        os.close(fd)
    found.discard(0)
    return found


def listening_inodes(port: int, proc_root: StrPath = PROC) -> set[int]:
    """Inodes of the TCP sockets (IPv4 and IPv6) that listen on ``port`` in this network namespace.

    Read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` (see :func:`_listening_in`).
    """
    return set().union(*(_listening_in(os.path.join(proc_root, "net", t), port) for t in _TABLES))


def reached_inodes(port: int, ipv6: bool, proc_root: StrPath = PROC) -> set[int]:
    """Inodes of the sockets listening on ``port`` that a connection over one family reaches.

    A connection over IPv4 reaches an IPv4 listener when there is one, else a dual-stack IPv6 one
    (listed in ``tcp6``); over IPv6, only ``tcp6``. The other table is read only when needed: an
    IPv6 table without listeners is still walked whole by the kernel.
    """
    for table in ("tcp6",) if ipv6 else _TABLES:
        found = _listening_in(os.path.join(proc_root, "net", table), port)
        if found:
            return found
    return set()


def socket_inodes(pid: int, proc_root: StrPath = PROC) -> set[int]:
    """Inodes of the sockets ``pid`` has open (``/proc/PID/fd/N -> socket:[INODE]``)."""
    folder = os.path.join(proc_root, str(pid), "fd")
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    found: set[int] = set()
    for name in names:
        try:
            target = os.readlink(os.path.join(folder, name))
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            try:
                found.add(int(target[8:-1]))
            except ValueError:
                continue
    return found


def port_holders(port: int, proc_root: StrPath = PROC) -> list[int]:
    """Pids of the processes that hold a socket listening on ``port`` (as far as we may see)."""
    inodes = listening_inodes(port, proc_root)
    if not inodes:
        return []
    return [pid for pid in pids(proc_root) if socket_inodes(pid, proc_root) & inodes]


def describe(pid: int, proc_root: StrPath = PROC) -> str:
    """``pid 42 (python3 -m http.server)``: a process as a person would recognise it."""
    args = cmdline(pid, proc_root)
    shown = " ".join(args)[:120] if args else "?"
    from vllmd.core.escape import one_line  # re: a cost `vllmd health` need not pay

    return f"pid {pid} ({one_line(shown)})"
