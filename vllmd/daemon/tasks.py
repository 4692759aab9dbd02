"""The daemon's tasks beside the reconciler: vLLM's output pumps, the health publisher, the probe
loop and the download sampler. Each waits on an event or a deadline, never on a tick; each is
testable in-process (tests/test_daemon_tasks.py)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO, Protocol

import anyio

from vllmd.core.choices import LogFormat
from vllmd.core.health import Phase, evaluate, loading_deadline
from vllmd.core.readiness import FAILURES_TO_WEDGE, Seen
from vllmd.daemon.healthfile import HealthPublisher
from vllmd.daemon.probe import (
    HINT_RETRY_S,
    HINT_WINDOW_S,
    READY_INTERVAL_S,
    STARTING_INTERVAL_S,
    Prober,
    ProbeResult,
    StartupHint,
    loopback_host,
    prove_ours,
)
from vllmd.daemon.reconcile import Reconciler
from vllmd.daemon.status import Status
from vllmd.logs import vllm_line_json
from vllmd.process.logpump import LinePump, stream_sink
from vllmd.process.outstream import OutStream
from vllmd.process.supervisor import Child, Output, first_of
from vllmd.settings import Settings
from vllmd.state.disk import tree_size

__all__ = [
    "SAMPLE_S",
    "fetch_output",
    "probe_vllm",
    "publish_health",
    "run_probe",
    "sample_downloads",
    "vllm_output",
]

log = logging.getLogger("vllmd.daemon")  # the component name users see in logs

SAMPLE_S = 3.0
"""How often the model cache is measured while vLLM loads (download progress)."""


def vllm_output(
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


def fetch_output(
    log_format: LogFormat, streams: tuple[OutStream, OutStream] | None = None
) -> Callable[[], LinePump]:
    """The pump of the fetch worker's stderr (huggingface_hub's warnings and errors): passed
    through masked like vLLM's output (as JSON objects of component ``fetch`` with
    ``--log-format json``), and kept out of vLLM's tail and progress."""
    write = stream_sink(sys.stderr.buffer) if streams is None else streams[1].write
    as_json = log_format == "json"

    def sink(data: bytes) -> None:
        if not as_json:
            write(data)

    def on_line(line: str) -> None:
        if as_json:
            write(vllm_line_json("stderr", line, component="fetch"))

    return lambda: LinePump(sink, on_line)


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


async def run_probe(
    settings: Settings,
    reconciler: Reconciler,
    status: Status,
    owners: Callable[[], Iterable[int]] | None = None,
    hint: StartupHint | None = None,
) -> None:
    """Probe the running vLLM with the real prober at the contract's cadence (and at once on
    vLLM's ``hint``); a 200 counts only from a socket that ``owners`` (vLLM's process tree)
    holds."""
    await probe_vllm(
        Prober(settings.host, settings.port),
        settings.port,
        reconciler,
        status,
        STARTING_INTERVAL_S,
        READY_INTERVAL_S,
        hint=hint,
        owners=owners,
        ipv6=":" in loopback_host(settings.host),
    )


async def probe_vllm(
    prober: _Checks,
    port: int,
    reconciler: Reconciler,
    status: Status,
    starting_interval_s: float,
    ready_interval_s: float,
    *,
    hint: StartupHint | None = None,
    owners: Callable[[], Iterable[int]] | None = None,
    ipv6: bool = False,
) -> None:
    """Ask ``prober`` about the vLLM the reconciler wants probed and tell it the answers: often
    while it loads (readiness is noticed fast), less often once it is ready. While it loads,
    vLLM's ``hint`` (its server says it is up) wakes the loop at once, and for a moment after
    it the probe asks every few milliseconds: the socket listens just after the line.

    With ``owners`` (vLLM's process tree), the first 200 of each launch counts only once the
    listening socket is proven theirs (:func:`~vllmd.daemon.probe.prove_ours`; ``ipv6``: the
    prober connects over IPv6); the proof holds until the next launch or a failed probe."""
    proven: Child | None = None  # the launch whose listener was proven ours
    while True:
        child = reconciler.probe_target()
        if child is None:
            await status.changed()  # a start touches the status
            continue
        result = await prober.check()
        if result.ok and owners is not None and proven is not child:
            result = await prove_ours(port, owners, ipv6=ipv6)
        proven = child if result.ok else None
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
            await first_of(child.exited.wait, hint.wait)


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
