"""``vllmd run``: the daemon's life as one short story.

Start up (folders, ldconfig, subreaper, key), run until a signal (watcher, reconciler, probe,
health), shut down (stop vLLM in the contract's order, exit 0). One root task group owns
everything; the signals are handled in one task; the stop runs shielded under its own deadlines.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import anyio
from anyio.abc import TaskStatus

from vllmd import guard
from vllmd.core.health import Phase, evaluate
from vllmd.core.masking import redact
from vllmd.daemon.healthfile import HealthPublisher
from vllmd.daemon.reconcile import Reconciler, Status
from vllmd.daemon.watch import Watcher
from vllmd.logs import vllm_line_json
from vllmd.process.logpump import LinePump, stream_sink
from vllmd.process.procgroup import Reaper, become_subreaper
from vllmd.process.supervisor import Child, Output, Supervisor
from vllmd.settings import Settings
from vllmd.state.credentials import InvalidCredentials, ensure_key
from vllmd.state.disk import tree_size

log = logging.getLogger("vllmd.daemon")  # the component name users see in logs

SAMPLE_S = 3.0
"""How often the model cache is measured while vLLM loads (download progress)."""
HEALTH_TICK_S = 1.0
"""How often the loading verdict is re-evaluated: the grace runs out on the clock, not on events."""


def run(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit code."""
    # Until the signal task runs, remember a stop request: as PID 1 a signal without a handler
    # is simply dropped, and a container stop would then wait for its SIGKILL.
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: early.append(received))
    return anyio.run(serve, settings, early)


def _prepare(settings: Settings) -> str:
    """Create the folders and the key; raise OSError with a clear message when we cannot."""
    for folder in (settings.models_dir, settings.run_dir, settings.public):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create {folder}: {exc.strerror}") from exc
    state = ensure_key(settings.credentials_path)
    if state.moved_aside is not None:
        log.warning("%s; moved it aside to %s", state.problem, state.moved_aside.name)
    if state.created:
        log.info("wrote a new API key %s to %s", redact(state.key), settings.credentials_path)
    return state.key


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


async def serve(settings: Settings, early_signals: list[int] | None = None) -> int:
    """The daemon: start up, run until a signal, shut down. Returns the exit code."""
    started = time.monotonic()
    try:
        _prepare(settings)
        guard_dir = install_guard(settings.run_dir) if settings.auth == "guard" else None
    except (OSError, InvalidCredentials) as exc:
        log.error("%s. Check that the volumes exist and are writable.", exc)
        return 1
    _ldconfig(settings)
    reaper = Reaper(reap_orphans=become_subreaper())
    status = Status()
    publisher = HealthPublisher(settings.health_path, os.getpid())
    stopping, escalated = anyio.Event(), anyio.Event()
    code = 0

    async with anyio.create_task_group() as root:
        await root.start(_signals, reaper, stopping, escalated)
        if early_signals:
            log.info("received %s during start-up", signal.Signals(early_signals[0]).name)
            stopping.set()
        supervisor = Supervisor(
            root,
            reaper,
            _output(status, settings.log_format),
            lambda child: reconciler.on_exit(child),
            stop_timeout_s=settings.stop_timeout_s,
            escalated=escalated,
        )
        reconciler = Reconciler(
            settings, supervisor, status, base_env=os.environ, guard_dir=guard_dir
        )
        watcher = Watcher(
            (settings.data, settings.public),
            (settings.store_path.name, settings.credentials_path.name),
            lambda: reconciler.wake(file_change=True),
            step_ms=settings.watch_step_ms,
        )
        try:
            async with anyio.create_task_group() as main:
                if stopping.is_set():  # asked to stop during start-up: start nothing
                    main.cancel_scope.cancel()
                await main.start(watcher.run)  # armed before the first reconcile: nothing slips
                await main.start(reconciler.run)
                log.info("vllmd is up (%.0f ms)", (time.monotonic() - started) * 1000)
                main.start_soon(_health, settings, status, publisher)
                main.start_soon(_probe, settings, supervisor, reconciler, status)
                main.start_soon(_sample_downloads, settings, status)
                await stopping.wait()
                log.info("stopping")
                main.cancel_scope.cancel()
        except Exception:
            # A bug of ours must not leave vLLM running without a supervisor.
            log.critical("vllmd failed; stopping vLLM", exc_info=True)
            code = 1
        finally:
            with anyio.CancelScope(shield=True):
                await supervisor.stop()
            root.cancel_scope.cancel()
    log.info("vllmd stopped")
    return code


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


def _output(status: Status, log_format: str) -> Output:
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


async def _health(settings: Settings, status: Status, publisher: HealthPublisher) -> None:
    """Publish the verdict whenever it changes; tick while loading so the grace can run out."""
    while True:
        verdict = evaluate(
            status.snapshot(), time.monotonic(), settings.loading_grace_s, settings.loading_cap_s
        )
        publisher.publish(verdict)
        # Loading is the one state that changes with time alone (the grace runs out).
        timeout = HEALTH_TICK_S if status.phase is Phase.STARTING else math.inf
        with anyio.move_on_after(timeout):
            await status.changed()


async def _probe(
    settings: Settings, supervisor: Supervisor, reconciler: Reconciler, status: Status
) -> None:
    """Probe the running vLLM: loading until it answers, then watch for it to stop answering."""
    from vllmd.daemon.probe import (  # aiohttp is heavy: not on the start-up path
        FAILURES_TO_WEDGE,
        READY_INTERVAL_S,
        STARTING_INTERVAL_S,
        Prober,
    )

    prober = Prober(settings.host, settings.port)
    try:
        failures = 0
        checked: Child | None = None
        while True:
            child = supervisor.child
            if child is None or not child.alive or child.stopping or status.phase is Phase.WEDGED:
                await status.changed()
                continue
            if child is not checked:
                checked, failures = child, 0
            result = await prober.check()
            if supervisor.child is not child or not child.alive or child.stopping:
                continue
            if result.ok:
                failures = 0
                if status.phase is Phase.STARTING:
                    status.phase = Phase.READY
                    status.ready_since = time.monotonic()
                    log.info("vLLM is ready on port %d", settings.port)
                    status.touch()
            elif status.phase is Phase.READY:
                failures += 1
                log.warning(
                    "vLLM health probe failed (%s), %d of %d",
                    result,
                    failures,
                    FAILURES_TO_WEDGE,
                )
                if failures >= FAILURES_TO_WEDGE:
                    reconciler.on_wedged(child)
                    continue
            interval = READY_INTERVAL_S if status.phase is Phase.READY else STARTING_INTERVAL_S
            with anyio.move_on_after(interval):
                await child.exited.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await prober.aclose()


async def _sample_downloads(settings: Settings, status: Status) -> None:
    """While vLLM loads, measure the model cache now and then, off the event loop."""
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
        await anyio.sleep(SAMPLE_S)
