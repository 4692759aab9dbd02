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
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from vllmd.core.choices import LogFormat
from vllmd.core.health import Phase, Snapshot, evaluate, loading_deadline
from vllmd.core.readiness import FAILURES_TO_WEDGE, Seen
from vllmd.core.shm import shm_warning
from vllmd.daemon.healthfile import HealthPublisher
from vllmd.daemon.prepare import ensure_key_logged, install_guard, ldconfig, make_folders
from vllmd.daemon.probe import (
    HINT_RETRY_S,
    HINT_WINDOW_S,
    READY_INTERVAL_S,
    STARTING_INTERVAL_S,
    Prober,
    ProbeResult,
    StartupHint,
)
from vllmd.daemon.reconcile import Bell, Reconciler
from vllmd.daemon.status import Status
from vllmd.daemon.streams import daemon_streams
from vllmd.daemon.watch import Watcher
from vllmd.hardware.shm import shm_space
from vllmd.logs import vllm_line_json
from vllmd.process.logpump import LinePump, stream_sink
from vllmd.process.outstream import OutStream
from vllmd.process.procgroup import Reaper, become_subreaper
from vllmd.process.supervisor import Output, Supervisor
from vllmd.settings import Settings
from vllmd.state.credentials import InvalidCredentials
from vllmd.state.disk import tree_size

log = logging.getLogger("vllmd.daemon")  # the component name users see in logs

SAMPLE_S = 3.0
"""How often the model cache is measured while vLLM loads (download progress)."""
STRAY_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
"""Signals that would kill the daemon by default (outside a pid namespace) and mean nothing to
it: logged and ignored, so that a stray ``kill -HUP`` never orphans vLLM."""


def run(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit code."""
    # Until the signal task runs, remember a stop request: as PID 1 a signal without a handler
    # is simply dropped, and a container stop would then wait for its SIGKILL.
    # A stray signal gets a handler too (not SIG_IGN, which vLLM would inherit through exec).
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, *STRAY_SIGNALS):
        signal.signal(signum, lambda received, _frame: early.append(received))
    streams = daemon_streams(settings.log_format)
    try:
        return anyio.run(serve, settings, early, streams)
    finally:
        for stream in streams:
            stream.close()


async def serve(
    settings: Settings,
    early_signals: list[int] | None = None,
    streams: tuple[OutStream, OutStream] | None = None,
) -> int:
    """The daemon: start up, run until a signal, shut down. Returns the exit code.

    ``streams`` are the daemon's stdout and stderr made non-blocking (by :func:`run`); without
    them vLLM's output goes to ``sys.stdout`` and ``sys.stderr`` as they are.
    """
    return await Daemon(settings, streams).serve(early_signals or [])


class Daemon:
    """One run of the daemon: :meth:`serve` = :meth:`start_up`, :meth:`run`, :meth:`shut_down`."""

    def __init__(
        self, settings: Settings, streams: tuple[OutStream, OutStream] | None = None
    ) -> None:
        self.settings = settings
        self.streams = streams
        self.adopter: int | None = None
        self.status = Status()
        self.bell = Bell()
        self.publisher = HealthPublisher(settings.health_path, os.getpid())
        self.stopping = anyio.Event()
        self.escalated = anyio.Event()
        self.guard_dir: Path | None = None
        self.hint = StartupHint()
        self.supervisor: Supervisor | None = None

    async def serve(self, early_signals: list[int]) -> int:
        """Start up, run until a signal, shut down; return the exit code."""
        started = time.monotonic()
        reaper = self.start_up()
        code = 0
        async with anyio.create_task_group() as root:
            for stream in self.streams or ():
                await root.start(stream.run)
            await root.start(_signals, reaper, self.stopping, self.escalated, self.relay_stop)
            for signum in early_signals:
                log.info("received %s during start-up", signal.Signals(signum).name)
            if any(signum not in STRAY_SIGNALS for signum in early_signals):
                self.stopping.set()
            supervisor = Supervisor(
                root,
                reaper,
                _output(self.status, self.settings.log_format, self.streams, self.hint),
                self.bell.child_exited,
                stop_timeout_s=self.settings.stop_timeout_s,
                escalated=self.escalated,
                adopter=self.adopter,
            )
            self.supervisor = supervisor
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

    def relay_stop(self) -> None:
        """Give vLLM its SIGTERM now, from the signal task: the stop begins before the daemon's
        tasks have wound down (waiting for them cost 12 ms); :meth:`shut_down` finishes it."""
        if self.supervisor is not None:
            self.supervisor.terminate()

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
            lambda: ensure_key_logged(settings),
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
            log.info("vllmd is up (%.0f ms)", (time.monotonic() - started) * 1000)
            main.start_soon(publish_health, settings, status, self.publisher)
            main.start_soon(_probe, settings, reconciler, status, supervisor.processes, self.hint)
            main.start_soon(sample_downloads, settings, status)
            await self.stopping.wait()
            log.info("stopping")
            main.cancel_scope.cancel()

    async def shut_down(self, supervisor: Supervisor, root: TaskGroup) -> None:
        """Stop vLLM in the contract's order (shielded: a second signal only hurries it)."""
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


def _output(
    status: Status,
    log_format: LogFormat,
    streams: tuple[OutStream, OutStream] | None = None,
    hint: StartupHint | None = None,
) -> Output:
    """Pumps that pass vLLM's output through (raw, or one JSON object a line with
    ``--log-format json``), keep its tail, and notice loading progress. With ``streams``, the
    output goes to them (never blocking); else to ``sys.stdout`` and ``sys.stderr``."""
    as_json = log_format == "json"

    def pump_for(stream_name: str, stream: BinaryIO) -> Callable[[], LinePump]:
        write = stream_sink(stream)
        if streams is not None:
            write = streams[0 if stream_name == "stdout" else 1].write

        def sink(data: bytes) -> None:
            status.tail.feed(data)
            if not as_json:
                write(data)

        def on_line(line: str) -> None:
            if hint is not None:
                hint.feed(line)
            if status.progress.feed(time.monotonic(), line):
                status.touch()
            if as_json:
                write(vllm_line_json(stream_name, line))

        return lambda: LinePump(sink, on_line)

    return Output(
        stdout=pump_for("stdout", sys.stdout.buffer), stderr=pump_for("stderr", sys.stderr.buffer)
    )


async def publish_health(settings: Settings, status: Status, publisher: HealthPublisher) -> None:
    """Publish the verdict whenever it may have changed: on every change of the status (vLLM's
    progress included), and when the loading deadline passes (the one change that comes from
    the clock alone). No tick: between those moments the verdict cannot change."""
    grace_s, cap_s = settings.loading_grace_s, settings.loading_cap_s
    while True:
        snapshot, now = status.snapshot(), time.monotonic()
        publisher.publish(evaluate(snapshot, now, grace_s, cap_s))
        deadline = loading_deadline(snapshot, grace_s, cap_s)
        timeout = publisher.next_check_s  # the file may be gone, or a write refused
        if deadline is not None and deadline > now:
            timeout = min(timeout, deadline - now)
        with anyio.move_on_after(timeout):
            await status.changed()


class _Checks(Protocol):
    async def check(self) -> ProbeResult: ...


async def _probe(
    settings: Settings,
    reconciler: Reconciler,
    status: Status,
    owners: Callable[[], list[int]] | None = None,
    hint: StartupHint | None = None,
) -> None:
    """Probe the running vLLM with the real prober at the contract's cadence (and at once on
    vLLM's ``hint``); a 200 counts only from a socket that ``owners`` (vLLM's process tree)
    holds."""
    prober = Prober(settings.host, settings.port, owners=owners)
    try:
        await probe_vllm(
            prober,
            settings.port,
            reconciler,
            status,
            STARTING_INTERVAL_S,
            READY_INTERVAL_S,
            hint=hint,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await prober.aclose()


async def probe_vllm(
    prober: _Checks,
    port: int,
    reconciler: Reconciler,
    status: Status,
    starting_interval_s: float,
    ready_interval_s: float,
    *,
    hint: StartupHint | None = None,
) -> None:
    """Ask ``prober`` about the vLLM the reconciler wants probed and tell it the answers: often
    while it loads (readiness is noticed fast), less often once it is ready. While it loads,
    vLLM's ``hint`` (its server says it is up) wakes the loop at once, and for a moment after
    it the probe asks every few milliseconds: the socket listens just after the line."""
    while True:
        child = reconciler.probe_target()
        if child is None:
            await status.changed()  # a start touches the status
            continue
        result = await prober.check()
        seen = reconciler.on_probe(child, result.ok)
        if seen is Seen.BECAME_READY:
            log.info("vLLM is ready on port %d", port)
        elif seen is Seen.FAILED or seen is Seen.WEDGED:
            failures = reconciler.readiness.failures
            log.warning(
                "vLLM health probe failed (%s), %d of %d", result, failures, FAILURES_TO_WEDGE
            )
        if reconciler.probe_target() is not child:
            continue  # wedged, or gone while we asked
        ready = reconciler.readiness.ready
        if ready or hint is None:
            with anyio.move_on_after(ready_interval_s if ready else starting_interval_s):
                await child.exited.wait()
            continue
        interval = starting_interval_s
        said = hint.since(child.started_at)
        if said is not None and time.monotonic() < said + HINT_WINDOW_S:
            interval = HINT_RETRY_S
        with anyio.move_on_after(interval):
            await _first_of(child.exited.wait, hint.wait)


async def sample_downloads(settings: Settings, status: Status, every_s: float = SAMPLE_S) -> None:
    """While vLLM loads, measure the model cache every ``every_s``, off the event loop."""
    while True:
        if status.phase is not Phase.STARTING:
            await status.changed()
            continue
        began = time.monotonic()
        size = await anyio.to_thread.run_sync(tree_size, settings.models_dir)
        before = status.progress.progress()
        status.progress.sample(began, size)
        if status.progress.progress() != before:
            status.touch()
        await anyio.sleep(every_s)


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns."""
    async with anyio.create_task_group() as tg:

        async def one(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(one, wait)
