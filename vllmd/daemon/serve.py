"""``vllmd run``: the daemon's life as one short story.

:meth:`Daemon.serve` reads top to bottom: start up (a fresh health file first, then the folders,
the key, the guard, ldconfig, the subreaper), run until a signal (watcher, reconciler, health,
probe, download sampler in one task group), shut down (stop vLLM in the contract's order, exit 0).
One root task group owns everything; the signals are handled in one task; the stop runs shielded
under its own deadlines.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus

from vllmd.core.health import Phase, Snapshot, evaluate
from vllmd.core.shm import shm_warning
from vllmd.daemon.fetches import Fetches
from vllmd.daemon.healthfile import HealthPublisher
from vllmd.daemon.prepare import ensure_key_logged, install_guard, ldconfig, make_folders
from vllmd.daemon.probe import (
    StartupHint,
)
from vllmd.daemon.reconcile import Bell, Reconciler
from vllmd.daemon.status import Status
from vllmd.daemon.streams import daemon_streams
from vllmd.daemon.tasks import (
    fetch_output,
    publish_health,
    run_probe,
    sample_downloads,
    vllm_output,
)
from vllmd.daemon.watch import Watcher
from vllmd.hardware.shm import shm_space
from vllmd.process.fetcher import Fetcher
from vllmd.process.outstream import OutStream
from vllmd.process.procgroup import Reaper, become_subreaper
from vllmd.process.supervisor import Supervisor
from vllmd.settings import Settings
from vllmd.state.credentials import InvalidCredentials
from vllmd.state.fetched import is_complete

if TYPE_CHECKING:
    from vllmd.early import Early

log = logging.getLogger("vllmd.daemon")  # the component name users see in logs

STRAY_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
"""Signals that would kill the daemon by default (outside a pid namespace) and mean nothing to
it: logged and ignored, so that a stray ``kill -HUP`` never orphans vLLM."""


def run(settings: Settings, early: Early | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit code.

    ``early`` is what the first milliseconds did (:mod:`vllmd.early`): the signals received
    during the imports count, the key written then is reported, and its watch ends once the
    daemon's own is armed.
    """
    # Until the signal task runs, remember a stop request: as PID 1 a signal without a handler
    # is simply dropped, and a container stop would then wait for its SIGKILL.
    # A stray signal gets a handler too (not SIG_IGN, which vLLM would inherit through exec).
    received: list[int] = early.signals if early is not None else []
    for signum in (signal.SIGTERM, signal.SIGINT, *STRAY_SIGNALS):
        signal.signal(signum, lambda signum, _frame: received.append(signum))
    streams = daemon_streams(settings.log_format)
    try:
        return anyio.run(serve, settings, received, streams, early)
    finally:
        for stream in streams:
            stream.close()


async def serve(
    settings: Settings,
    early_signals: list[int] | None = None,
    streams: tuple[OutStream, OutStream] | None = None,
    early: Early | None = None,
) -> int:
    """The daemon: start up, run until a signal, shut down. Returns the exit code.

    ``streams`` are the daemon's stdout and stderr made non-blocking (by :func:`run`); without
    them vLLM's output goes to ``sys.stdout`` and ``sys.stderr`` as they are.
    """
    return await Daemon(settings, streams, early).serve(early_signals or [])


class Daemon:
    """One run of the daemon: :meth:`serve` = :meth:`start_up`, :meth:`run`, :meth:`shut_down`."""

    def __init__(
        self,
        settings: Settings,
        streams: tuple[OutStream, OutStream] | None = None,
        early: Early | None = None,
    ) -> None:
        self.settings = settings
        self.streams = streams
        self.early = early
        self.adopter: int | None = None
        self.status = Status()
        self.bell = Bell()
        self.publisher = HealthPublisher(settings.health_path, os.getpid())
        self.stopping = anyio.Event()
        self.escalated = anyio.Event()
        self.guard_dir: Path | None = None
        self.hint = StartupHint()
        self.fetches: Fetches | None = None

    async def serve(self, early_signals: list[int]) -> int:
        """Start up, run until a signal, shut down; return the exit code."""
        started = time.monotonic()
        reaper = self.start_up()
        code = 0
        async with anyio.create_task_group() as root:
            for stream in self.streams or ():
                await root.start(stream.run)
            supervisor = Supervisor(
                root,
                reaper,
                vllm_output(self.status, self.settings.log_format, self.streams, self.hint),
                self.bell.child_exited,
                stop_timeout_s=self.settings.stop_timeout_s,
                escalated=self.escalated,
                adopter=self.adopter,
            )
            # The signal task relays a stop to vLLM at once (supervisor.terminate: its one
            # SIGTERM), before the daemon's tasks have wound down; shut_down finishes it.
            relay = supervisor.terminate
            self.fetches = self.make_fetches(root, reaper)
            await root.start(_signals, reaper, self.stopping, self.escalated, relay)
            for signum in early_signals:
                log.info("received %s during start-up", signal.Signals(signum).name)
            if any(signum not in STRAY_SIGNALS for signum in early_signals):
                self.stopping.set()
            try:
                await self.run(supervisor, started)
            except Exception:
                # A bug of ours must not leave vLLM running without a supervisor.
                log.critical("vllmd failed; stopping vLLM", exc_info=True)
                code = 1
            finally:
                await self.shut_down(supervisor, root)
        log.info("vllmd stopped")
        return code

    def make_fetches(self, root: TaskGroup, reaper: Reaper) -> Fetches | None:
        """What fetches a hub model's files before its launch, in the root task group (none
        with ``--no-fetch``: vLLM then downloads them itself)."""
        settings = self.settings
        if not settings.fetch:
            return None
        output = fetch_output(settings.log_format, self.streams)
        fetcher = Fetcher(reaper, settings.models_dir, output)
        complete = partial(is_complete, settings.models_dir)
        return Fetches(root, fetcher, self.status, self.bell.ring, complete)

    def start_up(self) -> Reaper:
        """Prepare the files, refresh the linker cache, become the reaper of orphans (and so
        the adopter of every descendant of vLLM); return the reaper."""
        self.prepare_files()
        ldconfig(self.settings)
        _warn_if_shm_small()
        subreaper = become_subreaper()
        self.adopter = os.getpid() if subreaper else None
        return Reaper(reap_orphans=subreaper)

    def prepare_files(self) -> None:
        """Publish a fresh health file (first of all: a previous run's verdict must never be read
        as this run's), create the folders and the key, place the guard.

        Nothing here is fatal: as PID 1, exiting would only restart the container into the same
        fault. What fails is logged; the reconciler retries the key on every wake-up, and the
        launch's prerequisites before every launch (:meth:`prepare_launch`).
        """
        settings = self.settings
        if settings.auth == "guard":
            self.guard_dir = settings.run_dir / "pythonpath"
        steps: tuple[Callable[[], object], ...] = (
            lambda: make_folders(settings.run_dir),
            lambda: self.publisher.publish(
                evaluate(Snapshot(phase=Phase.STARTING), time.monotonic(), 0, 0)
            ),
            lambda: make_folders(settings.public),
            lambda: ensure_key_logged(settings, self.early),
            self.prepare_launch,
        )
        for step in steps:
            try:
                step()
            except (OSError, InvalidCredentials) as exc:
                log.error(
                    "%s. Check that the volumes exist and are writable; vllmd keeps trying.", exc
                )

    def prepare_launch(self) -> None:
        """What every launch of vLLM needs on disk: the model cache folder and, with
        ``--auth guard``, the guard module (the run folder may have been removed since).
        Raises OSError that names the folder."""
        make_folders(self.settings.models_dir)
        if self.guard_dir is not None:
            try:
                install_guard(self.settings.run_dir)
            except OSError as exc:
                raise OSError(f"cannot place the API key guard in {self.guard_dir}: {exc}") from exc

    async def run(self, supervisor: Supervisor, started: float) -> None:
        """Watch, reconcile, publish the health and probe vLLM until a signal asks to stop."""
        settings, status = self.settings, self.status
        reconciler = Reconciler(
            settings,
            supervisor,
            status,
            self.bell,
            base_env=os.environ,
            guard_dir=self.guard_dir,
            prepare=self.prepare_launch,
            fetches=self.fetches,
        )
        watcher = Watcher(
            (settings.data, settings.public),
            (settings.store_path.name, settings.credentials_path.name),
            self.bell.file_changed,
            step_ms=settings.watch_step_ms,
        )
        if self.stopping.is_set():  # asked to stop during start-up: start nothing
            return
        async with anyio.create_task_group() as main:
            await main.start(watcher.run)  # armed before the first reconcile: nothing slips
            await main.start(reconciler.run)
            if self.early is not None:  # ours is armed: the start-up watch (vllmd/early.py) ends
                self.early.stop_watching_key()
            log.info("vllmd is up (%.0f ms)", (time.monotonic() - started) * 1000)
            main.start_soon(publish_health, settings, status, self.publisher)
            main.start_soon(
                run_probe, settings, reconciler, status, supervisor.processes, self.hint
            )
            main.start_soon(sample_downloads, settings, status)
            await self.stopping.wait()
            log.info("stopping")
            main.cancel_scope.cancel()

    async def shut_down(self, supervisor: Supervisor, root: TaskGroup) -> None:
        """Stop vLLM in the contract's order (shielded: a second signal only hurries it), and a
        fetch under way (its worker is stopped as the root task group winds down)."""
        if self.fetches is not None:
            self.fetches.cancel_now()
        with anyio.CancelScope(shield=True):
            await supervisor.stop()
        root.cancel_scope.cancel()


def _warn_if_shm_small() -> None:
    """Say at start when /dev/shm is too small for vLLM: its crash comes only after the load."""
    warning = shm_warning(*shm_space())
    if warning is not None:
        log.warning("%s", warning)


async def _signals(
    reaper: Reaper,
    stopping: anyio.Event,
    escalated: anyio.Event,
    relay: Callable[[], object] = lambda: None,
    *,
    task_status: TaskStatus[None],
) -> None:
    """The one task that handles signals: TERM/INT stop (twice: at once), CHLD reaps, and the
    stray ones are logged and ignored."""
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, *STRAY_SIGNALS)
    with anyio.open_signal_receiver(*handled) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGCHLD:
                reaper.reap()
            elif signum in STRAY_SIGNALS:
                log.warning(
                    "received %s: ignored (SIGTERM or SIGINT stop vllmd)",
                    signal.Signals(signum).name,
                )
            elif not stopping.is_set():
                relay()  # vLLM has its SIGTERM before anything else happens
                log.info("received %s", signal.Signals(signum).name)
                stopping.set()
            else:
                log.warning("received %s again: killing vLLM now", signal.Signals(signum).name)
                escalated.set()
