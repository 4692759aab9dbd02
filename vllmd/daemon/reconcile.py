"""The reconciler: wake on edges, act on levels.

Every wake-up (a file event, a vLLM exit, a probe verdict, the periodic rescan) ends here. It
re-reads both files, computes the desired launch, compares it with what runs, and acts: nothing,
a restart, a stop, or a crash restart after its back-off. A burst of events, a missed event or a
write caught half-way all end in the same place, because it always looks at the files as they are.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from vllmd.core.backoff import Backoff
from vllmd.core.exits import describe_exit
from vllmd.core.forensics import OutputTail, diagnose
from vllmd.core.health import ExitInfo, Phase, Snapshot
from vllmd.core.launch import Launch, plan_launch, secrets_of
from vllmd.core.masking import masker, redact
from vllmd.core.progress import ProgressTracker
from vllmd.process.supervisor import Child, Supervisor
from vllmd.settings import Settings
from vllmd.state.credentials import InvalidCredentials, ensure_key
from vllmd.state.store import Store, StoreError, read_store

log = logging.getLogger(__name__)

RESCAN_S = 5.0
"""The safety net: look at the files this often even when no event came."""
COOLDOWN_S = 1.0
"""For this long after a start, a change waits for the files to be quiet before it acts..."""
QUIET_S = 0.05
"""...for this long, so that a burst of writes ends in one more restart, with the last content."""


@dataclass
class Status:
    """What the daemon knows about vLLM, for the health verdict; mutated by the daemon only."""

    phase: Phase = Phase.NO_MODEL
    config_started_at: float | None = None
    ready_since: float | None = None
    exit: ExitInfo | None = None
    stuck_pids: tuple[int, ...] = ()
    store_problem: str | None = None
    model: str | None = None
    progress: ProgressTracker = field(default_factory=ProgressTracker)
    tail: OutputTail = field(default_factory=OutputTail)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def touch(self) -> None:
        """Tell whoever waits in :meth:`changed` that something changed."""
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        """Wait for the next :meth:`touch`."""
        await self._changed.wait()

    def snapshot(self) -> Snapshot:
        """The pure health input for this moment."""
        return Snapshot(
            phase=self.phase,
            config_started_at=self.config_started_at,
            progress=self.progress.progress(),
            exit=self.exit,
            stuck_pids=self.stuck_pids,
            store_problem=self.store_problem,
            model=self.model,
        )


def _fingerprint(path: Path) -> bytes | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError:
        return None


class Reconciler:
    """Keeps the running vLLM equal to the launch that the files describe."""

    def __init__(
        self,
        settings: Settings,
        supervisor: Supervisor,
        status: Status,
        *,
        base_env: Mapping[str, str],
        guard_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._supervisor = supervisor
        self._status = status
        self._base_env = dict(base_env)
        self._guard_dir = guard_dir
        self._clock = clock
        self._backoff = Backoff()
        self._event = anyio.Event()
        self._file_change = False
        self._last_start = float("-inf")
        self._restart_at: float | None = None
        self._wedged: Child | None = None
        self._key: str | None = None
        self._store: Store | None = None
        self._store_print: bytes | None = None
        self._store_problem: str | None = None
        self._dropped: tuple[str, ...] = ()

    # -- wake-ups -------------------------------------------------------------------------------

    def wake(self, *, file_change: bool = False) -> None:
        """Ask for a reconcile soon (at once, unless a restart has just happened)."""
        self._file_change = self._file_change or file_change
        self._event.set()

    def on_exit(self, child: Child) -> None:
        """vLLM exited on its own: schedule its restart after the back-off."""
        if child is not self._supervisor.child:
            return
        self._schedule_restart(child, Phase.CRASHED)

    def on_wedged(self, child: Child) -> None:
        """vLLM was ready and stopped answering while its process lives: restart it."""
        if child is self._supervisor.child and child.alive:
            log.warning(
                "vLLM (pid %d) stopped answering its health probe; restarting it", child.pid
            )
            self._wedged = child
            self._status.phase = Phase.WEDGED
            self._status.touch()
            self.wake()

    def _schedule_restart(self, child: Child, phase: Phase) -> None:
        status = self._status
        ready_for = None
        if status.ready_since is not None and child.exited_at is not None:
            ready_for = child.exited_at - status.ready_since
        delay = self._backoff.next_delay(ready_for)
        exited_at = child.exited_at if child.exited_at is not None else self._clock()
        self._restart_at = exited_at + delay
        diagnosis = diagnose(status.tail.text())
        if child.spawn_error is not None and diagnosis is None:
            diagnosis = diagnose(f"ERROR cannot start {child.launch.argv[0]}: {child.spawn_error}")
        status.exit = ExitInfo(
            returncode=child.returncode if child.returncode is not None else -1,
            restart_delay_s=delay,
            diagnosis=diagnosis,
        )
        status.phase = phase
        status.ready_since = None
        status.stuck_pids = child.stuck_pids
        status.touch()
        log.info("restarting vLLM in %.0f s (%s)", delay, describe_exit(child.returncode))
        self.wake()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile now, then every time something wakes us, until cancelled."""
        await self.reconcile()
        task_status.started()
        while True:
            await self._wait()
            await self.reconcile()

    async def _wait(self) -> None:
        timeout = RESCAN_S
        if self._restart_at is not None:
            timeout = min(timeout, max(0.0, self._restart_at - self._clock()))
        with anyio.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()
        if self._file_change:
            self._read_key()  # a vanished key comes back at once, whatever else waits
        if self._file_change and self._clock() - self._last_start < COOLDOWN_S:
            # Right after a restart: let a burst of writes finish before acting on it, but
            # never wait longer than the cool-down for a writer that does not stop.
            with anyio.move_on_after(COOLDOWN_S):
                while True:
                    with anyio.move_on_after(QUIET_S) as quiet:
                        await self._event.wait()
                    self._event = anyio.Event()
                    if quiet.cancelled_caught:
                        break
        self._file_change = False

    def _read_key(self) -> str | None:
        settings = self._settings
        try:
            state = ensure_key(settings.credentials_path)
        except (OSError, InvalidCredentials) as exc:
            log.error("cannot keep an API key in %s: %s", settings.credentials_path, exc)
            return self._key
        if state.moved_aside is not None:
            log.warning(
                "%s; moved it aside to %s and wrote a new key",
                state.problem,
                state.moved_aside.name,
            )
        if state.key != self._key:
            if state.created:
                log.info(
                    "wrote a new API key %s to %s", redact(state.key), settings.credentials_path
                )
            elif self._key is not None:
                log.info(
                    "the API key in %s changed to %s", settings.credentials_path, redact(state.key)
                )
        self._key = state.key
        return state.key

    def _read_store(self) -> Store | None:
        path = self._settings.store_path
        fingerprint = _fingerprint(path)
        if fingerprint == self._store_print and fingerprint is not None:
            return self._store
        try:
            store = read_store(path)
        except StoreError as exc:
            if str(exc) != self._store_problem:
                log.error("%s Keeping the last good configuration.", exc)
            self._store_problem = str(exc)
            self._status.store_problem = self._store_problem
            return self._store  # the last good one; the file is never touched
        self._store_print = fingerprint
        self._store = store
        if self._store_problem is not None:
            log.info("%s is valid again", path)
        self._store_problem = None
        self._status.store_problem = None
        return store

    def _desired(self) -> Launch | None:
        key = self._read_key()
        store = self._read_store()
        if key is None:
            return None
        if store is not None:
            for secret in secrets_of(store):
                masker.add(secret)  # vLLM may print them (its "non-default args" line does)
        plan = plan_launch(store, key, self._settings, self._base_env, self._guard_dir)
        if plan.dropped != self._dropped and plan.dropped:
            log.warning(
                "ignoring %s in %s: vllmd sets these itself",
                ", ".join(plan.dropped),
                self._settings.store_path,
            )
        self._dropped = plan.dropped
        return plan.launch

    async def reconcile(self) -> None:
        """Make what runs equal to what the files say."""
        self._settings.models_dir.mkdir(parents=True, exist_ok=True)
        desired = self._desired()
        supervisor, status = self._supervisor, self._status
        child = supervisor.child
        if self._wedged is not None and self._wedged is child:
            self._wedged = None
            await supervisor.stop()
            self._schedule_restart(child, Phase.WEDGED)
            desired = self._desired()
        running = child.launch if child is not None else None

        if desired is None:
            self._restart_at = None
            if child is not None and not child.done.is_set():
                log.info("no model selected: stopping vLLM")
                await supervisor.stop()
            if status.phase is not Phase.NO_MODEL:
                supervisor.child = None
                status.phase, status.exit, status.config_started_at = Phase.NO_MODEL, None, None
                status.model = None
                status.touch()
            return

        if desired != running:
            if child is not None and not child.done.is_set():
                log.info("the configuration changed: restarting vLLM")
                status.phase, status.config_started_at = Phase.STARTING, self._clock()
                status.touch()  # loading from now on, not "ready" while the old one stops
                await supervisor.stop()
                # Writes that came during the stop are read now, so they cost no extra restart.
                desired = self._desired()
                if desired is None:
                    return await self.reconcile()
            self._backoff.reset()
            await self._start(desired, new_config=True)
            return

        assert child is not None
        restart_at = self._restart_at
        if child.done.is_set() and restart_at is not None and self._clock() >= restart_at:
            await self._start(desired, new_config=False)

    async def _start(self, launch: Launch, *, new_config: bool) -> None:
        status = self._status
        now = self._clock()
        self._restart_at = None
        if new_config:
            status.config_started_at = now
            status.progress.reset(now)
            status.exit = None
        else:
            status.progress.restarted()
        status.phase = Phase.STARTING
        status.ready_since = None
        status.stuck_pids = ()
        status.model = launch.model
        status.tail.clear()
        self._last_start = now
        await self._supervisor.start(launch)
        status.touch()
