"""The reconciler: wake on edges, act on levels.

Every wake-up (a file event, a vLLM exit, a wedged verdict, the end of a fetch, the periodic
rescan) ends in :meth:`Reconciler.reconcile`: read (both files, the vLLM it started, the fetch it
started), decide (:func:`vllmd.core.decide.decide`, a pure function), act (start, stop, fetch),
and again until nothing is due now. A burst of events, a missed event or a write caught half-way
all end in the same place, because it always looks at the files as they are. It is the only
writer of :class:`Status`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal, Protocol

import anyio
from anyio.abc import TaskStatus

from vllmd.core.backoff import Backoff
from vllmd.core.decide import Act, Fetch, Running, decide, settled_at
from vllmd.core.exits import describe_exit
from vllmd.core.forensics import diagnose, misses_a_file
from vllmd.core.health import Diagnosis, ExitInfo, Phase
from vllmd.core.launch import Launch
from vllmd.core.readiness import Readiness, Seen
from vllmd.daemon.desired import DesiredLaunch
from vllmd.daemon.fetches import Fetches
from vllmd.daemon.status import Status
from vllmd.process.proc import describe, port_holders
from vllmd.process.supervisor import Child
from vllmd.settings import Settings

log = logging.getLogger(__name__)

RESCAN_S = 5.0
"""The safety net: look at the files this often even when no event came."""


class Supervising(Protocol):
    """What the reconciler needs of :class:`vllmd.process.supervisor.Supervisor`."""

    async def start(self, launch: Launch) -> Child: ...
    async def stop(self, *, drain: bool = True) -> Child | None: ...


class Bell:
    """What wakes the reconciler: file events (their times decide when a burst has settled),
    vLLM's exit, a wedged verdict. The periodic rescan is the reconciler's own deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._event = anyio.Event()
        self.first_change: float | None = None
        """When the first file change not yet read came."""
        self.last_change: float | None = None
        """When the last one came."""

    def file_changed(self) -> None:
        """A watched file may have changed (the watcher's callback)."""
        now = self._clock()
        if self.first_change is None:
            self.first_change = now
        self.last_change = now
        self.ring()

    def child_exited(self, child: Child) -> None:
        """vLLM exited on its own (the supervisor's callback); the reconciler reads how."""
        del child  # read from the reconciler's own reference to the child it started
        self.ring()

    def ring(self) -> None:
        """Ask for a reconcile soon."""
        self._event.set()

    def changes_read(self) -> None:
        """The files are about to be read: the changes so far are taken into account."""
        self.first_change = self.last_change = None

    async def wait(self, timeout: float) -> None:
        """Wait for the next ring, at most ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()


class Reconciler:
    """Keeps the running vLLM equal to the launch that the files describe.

    Args:
        settings: where the files are, and what the launch is made of.
        supervisor: starts and stops vLLM (a scripted fake in tests).
        status: what the health says; the reconciler is its only writer.
        bell: what wakes it; the watcher and the supervisor ring it.
        base_env: the environment vLLM inherits.
        guard_dir: where the API key guard lies, with ``--auth guard``.
        clock: monotonic seconds (injected in tests, with the bell's).
        rescan_s: how often to look at the files when nothing wakes it.
        prepare: what every launch needs on disk (the model cache folder, the guard module),
            made again before each launch; an OSError it raises is logged and the launch goes
            ahead (vLLM then says what it misses, and is restarted after its back-off).
        fetches: fetches a hub model's files before its launch (make before break); ``None``:
            vLLM downloads them itself, as it did before vllmd fetched.
    """

    def __init__(
        self,
        settings: Settings,
        supervisor: Supervising,
        status: Status,
        bell: Bell,
        *,
        base_env: Mapping[str, str],
        guard_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        rescan_s: float = RESCAN_S,
        prepare: Callable[[], None] | None = None,
        fetches: Fetches | None = None,
    ) -> None:
        self._settings = settings
        self._supervisor = supervisor
        self._status = status
        self._bell = bell
        self._clock = clock
        self._rescan_s = rescan_s
        self._prepare = prepare
        self._prepare_problem: str | None = None
        self._backoff = Backoff()
        self._child: Child | None = None  # the vLLM started last; None once stopped for good
        self._readiness = Readiness()  # of that vLLM
        self._exit_noted: Child | None = None
        self._last_start = -math.inf
        self._restart_at: float | None = None
        self._fetches = fetches
        self._files = DesiredLaunch(
            settings,
            base_env=base_env,
            guard_dir=guard_dir,
            is_complete=None if fetches is None else fetches.is_complete,
        )

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile now, then every time something wakes us (or a deadline passes), until
        cancelled."""
        next_at = await self.reconcile()
        task_status.started()
        while True:
            timeout = self._rescan_s
            if next_at is not None:
                timeout = min(timeout, max(0.0, next_at - self._clock()))
            await self._bell.wait(timeout)
            next_at = await self.reconcile()

    async def reconcile(self) -> float | None:
        """Read, decide, act, until nothing is due now; return when to look again (``None``:
        at the next wake-up or rescan)."""
        while True:
            now = self._clock()
            self._note_exit()
            bell = self._bell
            if bell.first_change is not None and bell.last_change is not None:
                settled = settled_at(bell.first_change, bell.last_change, self._last_start)
                if settled > now:
                    self._files.read_key()  # a vanished key comes back at once, whatever else waits
                    return settled
                bell.changes_read()
            desired = self._files.read()
            self._status.store_read(self._files.store_problem)
            fetch = self._fetch_for(desired)
            decision = decide(
                desired, self._running(), self._restart_at, cached=self._files.cached, fetch=fetch
            )
            if not decision.due(now):
                return decision.at
            await self._act(decision.act, desired)

    def _running(self) -> Running | None:
        child = self._child
        if child is None:
            return None
        readiness = self._readiness
        return Running(
            child.launch, done=child.done.is_set(), wedged=readiness.wedged, ready=readiness.ready
        )

    def _fetch_for(self, desired: Launch | None) -> Fetch | None:
        """The last fetch, as decide takes it; a failed one no longer wanted is forgotten."""
        fetches = self._fetches
        fetch = None if fetches is None else fetches.view
        stale = fetch is not None and not fetch.active and fetch.launch != desired
        if fetches is not None and stale:
            fetches.forget()
            return None
        return fetch

    async def _act(self, act: Act, desired: Launch | None) -> None:
        status, supervisor = self._status, self._supervisor
        child = self._child
        if act is Act.START or act is Act.RESTART:
            assert desired is not None
            await self._start(desired, new_config=act is Act.START)
        elif act is Act.REPLACE:
            fetched = self._fetches is not None and self._fetches.model() is not None
            if fetched and desired is not None:
                log.info("%s is in the cache: switching vLLM over to it", desired.model)
            else:
                log.info("the configuration changed: restarting vLLM")
            # Loading from now on, not "ready" while the old one stops.
            status.replacing(self._clock())
            await supervisor.stop()
        elif act is Act.STOP_WEDGED:
            assert child is not None
            log.warning(
                "vLLM (pid %d) stopped answering its health probe; restarting it", child.pid
            )
            await supervisor.stop(drain=False)  # it answers nothing: there is nothing to drain
            self._schedule_restart(child, Phase.WEDGED)
        elif act is Act.FETCH:
            assert desired is not None
            self._fetch(desired)
        elif act is Act.CANCEL_FETCH:
            assert self._fetches is not None
            log.info("the configuration changed during a download")
            await self._fetches.cancel()
        elif act is Act.STOP:
            if child is not None and not child.done.is_set():
                log.info("no model selected: stopping vLLM")
                await supervisor.stop()
            self._child, self._restart_at = None, None
            status.no_model()

    def _fetch(self, launch: Launch) -> None:
        """Fetch ``launch``'s files: beside the ready old model, or first (the loading)."""
        assert self._fetches is not None  # decide fetches only what the cache check asked for
        child = self._child
        serving = child is not None and not child.done.is_set() and self._readiness.ready
        if not serving:
            new_config = child is None or child.launch != launch
            now = self._clock()
            if new_config:  # an old one that ended is not coming back
                self._backoff.reset()
                self._status.progress.reset(now)
                self._child, self._restart_at = None, None
            self._status.started(launch.model, new_config_at=now if new_config else None)
        self._fetches.start(launch, self._files.targets)

    async def _start(self, launch: Launch, *, new_config: bool) -> None:
        status = self._status
        if self._fetches is not None:
            self._fetches.forget()  # its model is launched: detail.fetch has said its piece
        now = self._clock()
        self._restart_at = None
        if new_config:
            self._backoff.reset()
            status.progress.reset(now)
        else:
            status.progress.restarted()
        status.tail.clear()
        self._readiness = Readiness()
        self._last_start = now
        status.started(launch.model, new_config_at=now if new_config else None)
        self._prepare_launch()
        self._child = await self._supervisor.start(launch)
        status.touch()  # the probe waits for a child to probe

    def _prepare_launch(self) -> None:
        """Make what the launch needs on disk; log a failure once, and when it is fixed."""
        if self._prepare is None:
            return
        try:
            self._prepare()
        except OSError as exc:
            problem = str(exc)
            if problem != self._prepare_problem:
                log.error("%s; starting vLLM anyway, it will say what it misses", problem)
            self._prepare_problem = problem
            return
        if self._prepare_problem is not None:
            log.info("what vLLM needs on disk is in place again")
        self._prepare_problem = None

    # -- what happened to vLLM ------------------------------------------------------------------

    def _note_exit(self) -> None:
        """A vLLM that ended on its own (crash, or could not start): schedule its restart; an old
        model that ends while the new one's files come is not restarted: the fetch goes on,
        and is the loading from now."""
        child = self._child
        if child is None or child is self._exit_noted or child.stopping or not child.done.is_set():
            return
        self._exit_noted = child
        fetch = None if self._fetches is None else self._fetches.view
        if fetch is not None and fetch.launch != child.launch:
            log.warning(
                "vLLM of the previous model %s during the download of the next; the next starts "
                "once its files are in",
                describe_exit(child.returncode),
            )
            self._child, self._restart_at = None, None
            self._status.started(self._fetches_model(), new_config_at=self._clock())
            return
        self._schedule_restart(child, Phase.CRASHED)

    def _fetches_model(self) -> str | None:
        return None if self._fetches is None else self._fetches.model()

    def _schedule_restart(self, child: Child, phase: Literal[Phase.CRASHED, Phase.WEDGED]) -> None:
        ready_since = self._readiness.ready_since
        ready_for = None
        if ready_since is not None and child.exited_at is not None:
            ready_for = child.exited_at - ready_since
        delay = self._backoff.next_delay(ready_for)
        exited_at = child.exited_at if child.exited_at is not None else self._clock()
        self._restart_at = exited_at + delay
        diagnosis = _with_port_holder(diagnose(self._status.tail.text()), self._settings.port)
        if child.spawn_error is not None and diagnosis is None:
            diagnosis = diagnose(f"ERROR cannot start {child.launch.argv[0]}: {child.spawn_error}")
        if misses_a_file(diagnosis, offline=bool(child.launch.offline)):
            assert diagnosis is not None
            log.warning(
                "vLLM, started without the hub (HF_HUB_OFFLINE=1) since its files were fetched, "
                "missed a file in the cache (%s); starting it once more with the hub reachable",
                diagnosis.line,
            )
            self._files.go_online(child.launch)
        returncode = child.returncode if child.returncode is not None else -1
        self._status.exited(
            phase,
            ExitInfo(returncode=returncode, restart_delay_s=delay, diagnosis=diagnosis),
            child.stuck_pids,
        )
        log.info("restarting vLLM in %.0f s (%s)", delay, describe_exit(child.returncode))

    def probe_target(self) -> Child | None:
        """The vLLM to probe now, if any (alive, not being stopped, not wedged)."""
        child = self._child
        if child is None or not self._readiness.wants_probe(
            alive=child.alive, stopping=child.stopping
        ):
            return None
        return child

    @property
    def readiness(self) -> Readiness:
        """The probe's view of the vLLM started last (read it; :meth:`on_probe` changes it)."""
        return self._readiness

    def on_probe(self, child: Child, ok: bool) -> Seen:
        """Take the probe's answer about ``child`` (``ok``: ``/health`` answered 200)."""
        if child is not self._child or not child.alive or child.stopping:
            return Seen.NOTHING_NEW  # a stale answer: that vLLM is gone or going
        seen = self._readiness.observe(ok, self._clock())
        if seen is Seen.BECAME_READY:
            self._status.ready()
        elif seen is Seen.WEDGED:
            self._status.wedged()
            self._bell.ring()
        return seen


def _with_port_holder(diagnosis: Diagnosis | None, port: int) -> Diagnosis | None:
    """For a crash because vLLM's port was taken, the cause names who holds it (when visible)."""
    if diagnosis is None or diagnosis.kind != "port-in-use" or diagnosis.cause is None:
        return diagnosis
    holders = port_holders(port)
    if not holders:
        return diagnosis
    who = ", ".join(describe(pid) for pid in holders)
    return replace(diagnosis, cause=f"{diagnosis.cause.rstrip('.')}: {who} holds port {port}.")
