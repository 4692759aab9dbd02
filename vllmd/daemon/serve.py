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
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from vllmd import guard
from vllmd.core.choices import LogFormat
from vllmd.core.health import Phase, Snapshot, evaluate, loading_deadline
from vllmd.core.masking import redact
from vllmd.core.readiness import FAILURES_TO_WEDGE, Seen
from vllmd.core.shm import shm_warning
from vllmd.daemon.healthfile import HealthPublisher
from vllmd.daemon.probe import READY_INTERVAL_S, STARTING_INTERVAL_S, Prober, ProbeResult
from vllmd.daemon.reconcile import Bell, Reconciler
from vllmd.daemon.status import Status
from vllmd.daemon.watch import Watcher
from vllmd.hardware.shm import shm_space
from vllmd.logs import vllm_line_json
from vllmd.process.logpump import LinePump, stream_sink
from vllmd.process.procgroup import Reaper, become_subreaper
from vllmd.process.supervisor import Output, Supervisor
from vllmd.settings import Settings
from vllmd.state.credentials import InvalidCredentials, ensure_key
from vllmd.state.disk import tree_size

log = logging.getLogger("vllmd.daemon")  # the component name users see in logs

SAMPLE_S = 3.0
"""How often the model cache is measured while vLLM loads (download progress)."""


def run(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit code."""
    # Until the signal task runs, remember a stop request: as PID 1 a signal without a handler
    # is simply dropped, and a container stop would then wait for its SIGKILL.
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: early.append(received))
    return anyio.run(serve, settings, early)


async def serve(settings: Settings, early_signals: list[int] | None = None) -> int:
    """The daemon: start up, run until a signal, shut down. Returns the exit code."""
    return await Daemon(settings).serve(early_signals or [])


class Daemon:
    """One run of the daemon: :meth:`serve` = :meth:`start_up`, :meth:`run`, :meth:`shut_down`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.status = Status()
        self.bell = Bell()
        self.publisher = HealthPublisher(settings.health_path, os.getpid())
        self.stopping = anyio.Event()
        self.escalated = anyio.Event()
        self.guard_dir: Path | None = None

    async def serve(self, early_signals: list[int]) -> int:
        """Start up, run until a signal, shut down; return the exit code."""
        started = time.monotonic()
        reaper = self.start_up()
        if reaper is None:
            return 1
        code = 0
        async with anyio.create_task_group() as root:
            await root.start(_signals, reaper, self.stopping, self.escalated)
            if early_signals:
                log.info("received %s during start-up", signal.Signals(early_signals[0]).name)
                self.stopping.set()
            supervisor = Supervisor(
                root,
                reaper,
                _output(self.status, self.settings.log_format),
                self.bell.child_exited,
                stop_timeout_s=self.settings.stop_timeout_s,
                escalated=self.escalated,
            )
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

    def start_up(self) -> Reaper | None:
        """Prepare the files, refresh the linker cache, become the reaper of orphans; return the
        reaper, or ``None`` when the daemon cannot run."""
        if not self.prepare_files():
            return None
        _ldconfig(self.settings)
        _warn_if_shm_small()
        return Reaper(reap_orphans=become_subreaper())

    def prepare_files(self) -> bool:
        """Publish a fresh health file (first of all: a previous run's verdict must never be read
        as this run's), create the folders and the key, place the guard. Returns whether all
        went well; what did not is logged."""
        settings = self.settings
        try:
            _make_folders(settings.run_dir)
            self.publisher.publish(evaluate(Snapshot(phase=Phase.STARTING), time.monotonic(), 0, 0))
            _make_folders(settings.models_dir, settings.public)
            _ensure_key(settings)
            if settings.auth == "guard":
                self.guard_dir = install_guard(settings.run_dir)
        except (OSError, InvalidCredentials) as exc:
            log.error("%s. Check that the volumes exist and are writable.", exc)
            return False
        return True

    async def run(self, supervisor: Supervisor, started: float) -> None:
        """Watch, reconcile, publish the health and probe vLLM until a signal asks to stop."""
        settings, status = self.settings, self.status
        reconciler = Reconciler(
            settings, supervisor, status, self.bell, base_env=os.environ, guard_dir=self.guard_dir
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
            main.start_soon(_probe, settings, reconciler, status)
            main.start_soon(sample_downloads, settings, status)
            await self.stopping.wait()
            log.info("stopping")
            main.cancel_scope.cancel()

    async def shut_down(self, supervisor: Supervisor, root: TaskGroup) -> None:
        """Stop vLLM in the contract's order (shielded: a second signal only hurries it)."""
        with anyio.CancelScope(shield=True):
            await supervisor.stop()
        root.cancel_scope.cancel()


def _make_folders(*folders: Path) -> None:
    """Create ``folders``; raise OSError with a clear message when we cannot."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create {folder}: {exc.strerror}") from exc


def _ensure_key(settings: Settings) -> None:
    """Make sure a valid API key is on disk, and say what was done about it."""
    state = ensure_key(settings.credentials_path)
    if state.moved_aside is not None:
        log.warning("%s; moved it aside to %s", state.problem, state.moved_aside.name)
    if state.created:
        log.info("wrote a new API key %s to %s", redact(state.key), settings.credentials_path)


def _warn_if_shm_small() -> None:
    """Say at start when /dev/shm is too small for vLLM: its crash comes only after the load."""
    warning = shm_warning(*shm_space())
    if warning is not None:
        log.warning("%s", warning)


def _ldconfig(settings: Settings) -> None:
    """Refresh the linker cache once (Triton must find the host-injected libcuda)."""
    program = shutil.which("ldconfig") or (
        "/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None
    )
    if not settings.ldconfig or program is None or os.geteuid() != 0:
        return
    try:
        done = subprocess.run([program], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("ldconfig failed: %s (continuing)", exc)
        return
    if done.returncode != 0:
        log.warning(
            "ldconfig exited with status %d (continuing): %s",
            done.returncode,
            done.stderr.decode(errors="replace").strip()[-500:],
        )


def install_guard(run_dir: Path) -> Path:
    """Place the guard module alone in ``RUN_DIR/pythonpath`` and return that folder."""
    folder = run_dir / "pythonpath"
    package = folder / "vllmd"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""vllmd\'s API key guard, alone."""\n')
    shutil.copyfile(guard.__file__, package / "guard.py")
    return folder


async def _signals(
    reaper: Reaper,
    stopping: anyio.Event,
    escalated: anyio.Event,
    *,
    task_status: TaskStatus[None],
) -> None:
    """The one task that handles signals: TERM/INT stop (twice: at once), CHLD reaps."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGCHLD) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGCHLD:
                reaper.reap()
            elif not stopping.is_set():
                log.info("received %s", signal.Signals(signum).name)
                stopping.set()
            else:
                log.warning("received %s again: killing vLLM now", signal.Signals(signum).name)
                escalated.set()


def _output(status: Status, log_format: LogFormat) -> Output:
    """Pumps that pass vLLM's output through (raw, or one JSON object a line with
    ``--log-format json``), keep its tail, and notice loading progress."""
    as_json = log_format == "json"

    def pump_for(stream_name: str, stream: BinaryIO) -> Callable[[], LinePump]:
        write = stream_sink(stream)

        def sink(data: bytes) -> None:
            status.tail.feed(data)
            if not as_json:
                write(data)

        def on_line(line: str) -> None:
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


async def _probe(settings: Settings, reconciler: Reconciler, status: Status) -> None:
    """Probe the running vLLM with the real prober at the contract's cadence."""
    prober = Prober(settings.host, settings.port)
    try:
        await probe_vllm(
            prober, settings.port, reconciler, status, STARTING_INTERVAL_S, READY_INTERVAL_S
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
) -> None:
    """Ask ``prober`` about the vLLM the reconciler wants probed and tell it the answers: often
    while it loads (readiness is noticed fast), less often once it is ready."""
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
        with anyio.move_on_after(ready_interval_s if ready else starting_interval_s):
            await child.exited.wait()


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
