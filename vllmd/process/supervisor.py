"""The supervisor: the only code that touches the vLLM process.

It starts vLLM in its own session and process group, watches the main process exit on its own
(a pidfd, not ``Process.wait()``, which would also wait for the pipes that the engine inherited),
kills whatever the main process leaves behind in its group, and stops it in the contract's order:
one SIGTERM to the main process (a second TERM to an engine mid-cleanup leaks workers), a deadline,
then SIGKILL to the whole group, then a check that the group is empty. On a planned stop the
deadline is vLLM's drain (its ``--shutdown-timeout``: in-flight requests finish) plus the stop
timeout, which counts from the end of the drain; a wedged vLLM answers nobody, so its stop skips
the drain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from vllmd.core.exits import describe_exit
from vllmd.core.launch import Launch, shown_argv
from vllmd.process.logpump import LinePump, pump
from vllmd.process.proc import descendants, group_members
from vllmd.process.procgroup import Reaper

log = logging.getLogger(__name__)

KILL_WAIT_S = 10.0
"""How long a group member may survive SIGKILL (stuck in a driver) before we give up on it."""
PIPE_DRAIN_S = 1.0
"""How long the output pumps may take to drain once vLLM's group is gone."""


@dataclass(frozen=True, slots=True)
class Output:
    """Where a child's output goes: one pump per stream, built fresh for each child."""

    stdout: Callable[[], LinePump]
    stderr: Callable[[], LinePump]


@dataclass(eq=False)
class Child:
    """One vLLM process: what it runs, when it started, and how it ended."""

    pid: int
    launch: Launch
    started_at: float
    returncode: int | None = None
    exited_at: float | None = None
    stopping: bool = False
    term_sent_at: float | None = None
    grace_s: float | None = None  # SIGTERM → SIGKILL, fixed at the first SIGTERM
    stuck_pids: tuple[int, ...] = ()
    spawn_error: str | None = None
    exited: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)  # exited and group empty (or stuck)

    @property
    def alive(self) -> bool:
        """Whether the main process has not exited yet."""
        return self.returncode is None


Spawn = Callable[[Sequence[str], dict[str, str]], "subprocess.Popen[bytes]"]


def popen_in_group(argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with exactly ``env``, in a new session and process group, output piped."""
    return subprocess.Popen(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )


class Supervisor:
    """Runs at most one vLLM process group at a time."""

    def __init__(
        self,
        tg: TaskGroup,
        reaper: Reaper,
        output: Output,
        on_exit: Callable[[Child], None],
        *,
        stop_timeout_s: float,
        kill_wait_s: float = KILL_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
        spawn: Spawn = popen_in_group,
        escalated: anyio.Event | None = None,
        members: Callable[[int], list[int]] = group_members,
        adopter: int | None = None,
    ) -> None:
        self._tg = tg
        self._reaper = reaper
        self._output = output
        self._on_exit = on_exit
        self._stop_timeout_s = stop_timeout_s
        self._kill_wait_s = kill_wait_s
        self._clock = clock
        self._spawn = spawn
        self._escalated = escalated if escalated is not None else anyio.Event()
        self._group_members = members
        self._adopter = adopter
        self.child: Child | None = None

    async def start(self, launch: Launch) -> Child:
        """Start ``launch``; the previous child must have been stopped (its group empty)."""
        assert self.child is None or self.child.done.is_set(), "start() while a child runs"
        now = self._clock()
        try:
            proc = self._spawn(launch.argv, launch.environ)
        except OSError as exc:
            child = Child(pid=-1, launch=launch, started_at=now, spawn_error=str(exc))
            self.child = child
            log.error(
                "cannot start vLLM program %r: %s. Check --vllm / VLLMD_VLLM.", launch.argv[0], exc
            )
            self._finish(child, 127 if isinstance(exc, FileNotFoundError) else 126)
            child.done.set()
            self._on_exit(child)
            return child
        self._reaper.watch(proc.pid)
        child = Child(pid=proc.pid, launch=launch, started_at=now)
        self.child = child
        log.info("started vLLM, pid %d: %s", proc.pid, shown_argv(launch.argv))
        assert proc.stdout is not None and proc.stderr is not None
        # The pumps own the pipe fds from here; detach them from the Popen object.
        fds = os.dup(proc.stdout.fileno()), os.dup(proc.stderr.fileno())
        proc.stdout.close()
        proc.stderr.close()
        self._tg.start_soon(self._watch, child, proc, fds)
        return child

    def _finish(self, child: Child, returncode: int) -> None:
        child.returncode = returncode
        child.exited_at = self._clock()
        child.exited.set()

    async def _watch(
        self, child: Child, proc: subprocess.Popen[bytes], fds: tuple[int, int]
    ) -> None:
        async with anyio.create_task_group() as pumps:
            pumps.start_soon(pump, fds[0], self._output.stdout())
            pumps.start_soon(pump, fds[1], self._output.stderr())
            returncode = await self._reaper.wait(child.pid)
            proc.returncode = returncode  # so Popen never polls a pid that is gone
            self._finish(child, returncode)
            if not child.stopping:
                log.warning(
                    "vLLM (pid %d) exited on its own: %s", child.pid, describe_exit(returncode)
                )
            child.stuck_pids = await self._empty_group(child.pid)
            # With the group gone the pipes reach end of file: let the pumps drain the last
            # lines (the error that explains a crash is usually there), but not forever: a
            # process that left the group may still hold them.
            pumps.cancel_scope.deadline = anyio.current_time() + PIPE_DRAIN_S
        child.done.set()
        if not child.stopping:
            self._on_exit(child)

    def _members(self, pgid: int) -> list[int]:
        """vLLM's live processes: its group, and with an adopter every descendant of it.

        A descendant that called ``setsid`` has left the group; as a subreaper the daemon (the
        adopter) inherits it when its parent dies, so it is found among the adopter's
        descendants (the daemon starts nothing but vLLM).
        """
        found = set(self._group_members(pgid)) | set(descendants(pgid))
        if self._adopter is not None:
            found |= set(descendants(self._adopter))
        return sorted(found)

    def processes(self) -> Iterator[int]:
        """The live processes of the running vLLM: its main process first, then the rest of its
        group and its descendants; none when none runs. The probe asks it who may hold vLLM's
        listening socket, which is the main process's: the rest (a scan of ``/proc``, some
        milliseconds) is looked up only when the main process does not hold it."""
        child = self.child
        if child is None or child.pid < 0 or child.done.is_set():
            return
        yield child.pid
        yield from (pid for pid in self._members(child.pid) if pid != child.pid)

    def _kill_all(self, pgid: int, pids: list[int]) -> None:
        """SIGKILL the group ``pgid`` and each of ``pids`` that left it."""
        kill_group(pgid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    async def _empty_group(self, pgid: int) -> tuple[int, ...]:
        """Kill what is left of vLLM (its group and its descendants) and wait until none lives."""
        left = self._members(pgid)
        if not left:
            return ()
        log.info("killing %d process(es) left of vLLM (group %d): %s", len(left), pgid, left)
        self._kill_all(pgid, left)
        with anyio.move_on_after(self._kill_wait_s):
            while left:
                with anyio.move_on_after(0.05):
                    await self._reaper.any_exit()
                left = self._members(pgid)
                if left:
                    self._kill_all(pgid, left)  # one that forked while we killed
        if left:
            log.error(
                "process(es) %s of vLLM's group survived SIGKILL for %.0f s (stuck in a driver?); "
                "starting the next vLLM anyway",
                left,
                self._kill_wait_s,
            )
        return tuple(left)

    async def stop(self, *, drain: bool = True) -> Child | None:
        """Stop the child: one SIGTERM to the main process, deadline, SIGKILL to the group.

        With ``drain`` (every planned stop) the deadline is vLLM's drain plus the stop timeout;
        without it (a wedged vLLM, which finishes nothing) the stop timeout alone.
        """
        child = self.terminate(drain=drain)
        if child is None or child.done.is_set():
            return child
        if child.alive:
            assert child.grace_s is not None and child.term_sent_at is not None
            left = child.grace_s - (self._clock() - child.term_sent_at)
            if not self._escalated.is_set() and left > 0:
                with anyio.move_on_after(left):
                    await first_of(child.exited.wait, self._escalated.wait)
            if child.alive:
                if self._escalated.is_set():
                    log.warning("second stop request: killing vLLM's group %d now", child.pid)
                else:
                    log.warning(
                        "vLLM (pid %d) did not stop within %g s; killing its group",
                        child.pid,
                        child.grace_s,
                    )
                kill_group(child.pid)
        await child.done.wait()  # bounded: the main process is killed, the group wait has a cap
        log.info("vLLM (pid %d) stopped: %s", child.pid, describe_exit(child.returncode))
        return child

    def terminate(self, *, drain: bool = True) -> Child | None:
        """Send the child its one SIGTERM now, without waiting; :meth:`stop` does the rest.

        Synchronous, so that the signal task can relay a stop request at once, before the other
        tasks have wound down. Idempotent: exactly one TERM, even when asked again.
        """
        child = self.child
        if child is None or child.done.is_set():
            return child
        child.stopping = True
        if child.alive and child.term_sent_at is None:
            drain_s = child.launch.drain_s if drain else 0.0
            child.grace_s = drain_s + self._stop_timeout_s
            child.term_sent_at = self._clock()
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
            if drain_s:
                log.info(
                    "stopping vLLM (pid %d) with SIGTERM; requests in flight have %g s to finish",
                    child.pid,
                    drain_s,
                )
            else:
                log.info("stopping vLLM (pid %d) with SIGTERM", child.pid)
        return child


def kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid``; one that is gone already is done."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


async def first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` (``event.wait``…) returns; cancel the others."""
    async with anyio.create_task_group() as tg:

        async def one(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(one, wait)
