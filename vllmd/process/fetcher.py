"""The fetch worker as the daemon runs it: a supervised process, its events as a FetchState.

:class:`Fetcher` starts ``python -m vllmd.fetch`` in its own session and process group (like vLLM,
with the supervisor's spawner), passes its stderr through masked (huggingface_hub's warnings), reads
its stdout's event lines into a :class:`~vllmd.core.fetchstate.FetchState` with a rate over the
last 10 s, and returns the final state. Its exit status comes from the daemon's one
:class:`~vllmd.process.procgroup.Reaper` (as PID 1 the daemon reaps every orphan: nobody else may
wait for a child). Cancelling :meth:`Fetcher.run` stops the worker: SIGTERM to its group, a short
deadline, SIGKILL, then a check that the group is empty; the partial files stay for the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import anyio

from vllmd.core.exits import describe_exit
from vllmd.core.fetchplan import Target, target_arg
from vllmd.core.fetchstate import (
    DoneEvent,
    ErrorEvent,
    FetchError,
    FetchState,
    PlanEvent,
    ProgressEvent,
    RateWindow,
    decode_event,
)
from vllmd.process.logpump import LinePump, pump
from vllmd.process.proc import group_members
from vllmd.process.procgroup import Reaper
from vllmd.process.supervisor import (
    KILL_WAIT_S,
    PIPE_DRAIN_S,
    Spawn,
    kill_group,
    popen_in_group,
)

__all__ = ["Fetcher"]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
"""How long the worker has after SIGTERM: it holds no state that needs a clean exit."""


class _Run:
    """One worker's events folded into its state."""

    def __init__(
        self, model: str, clock: Callable[[], float], on_change: Callable[[FetchState], None]
    ) -> None:
        self.state = FetchState(model)
        self.finished = False
        self._clock = clock
        self._on_change = on_change
        self._window = RateWindow()

    def on_line(self, line: str) -> None:
        event = decode_event(line)
        if event is None:
            log.warning("fetch worker: not an event line: %.200s", line)
            return
        if isinstance(event, PlanEvent | ProgressEvent):
            done = event.present if isinstance(event, PlanEvent) else event.done
            self._window.sample(self._clock(), done)
            rate = self._window.rate_bps
            self.state = replace(self.state, total=event.total, done=done, rate_bps=rate)
        elif isinstance(event, DoneEvent):
            self.finished = True
            self.state = replace(self.state, total=event.total, done=event.total)
            return
        elif isinstance(event, ErrorEvent):
            error = FetchError(event.kind, event.message, event.needed, event.free)
            self.state = replace(self.state, error=error, rate_bps=0.0)
        self.notify()

    def notify(self) -> None:
        """Tell the listener the state now."""
        self._on_change(self.state)


class Fetcher:
    """Runs the fetch worker, one at a time, for the daemon."""

    def __init__(
        self,
        reaper: Reaper,
        models_dir: Path,
        stderr: Callable[[], LinePump],
        *,
        margin_bytes: int | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        kill_wait_s: float = KILL_WAIT_S,
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
        spawn: Spawn = popen_in_group,
        members: Callable[[int], list[int]] = group_members,
    ) -> None:
        self._reaper = reaper
        self._models_dir = models_dir
        self._stderr = stderr
        self._margin_bytes = margin_bytes
        self._stop_timeout_s = stop_timeout_s
        self._kill_wait_s = kill_wait_s
        self._python = python
        self._clock = clock
        self._spawn = spawn
        self._members = members

    def argv(self, targets: Sequence[Target]) -> list[str]:
        """The worker's command line for ``targets``."""
        margin = [] if self._margin_bytes is None else ["--margin-bytes", str(self._margin_bytes)]
        models = ["--models", str(self._models_dir)]
        return [self._python, "-m", "vllmd.fetch", *models, *margin, *map(target_arg, targets)]

    async def run(
        self,
        targets: Sequence[Target],
        env: Mapping[str, str],
        on_change: Callable[[FetchState], None],
    ) -> FetchState:
        """Fetch ``targets`` (the first names the model) with ``env``; the final state.

        ``on_change`` hears every plan, progress and error. The state's ``error`` is set on any
        failure, a worker that died without saying why included. Cancelled, it stops the worker
        and leaves no process behind.
        """
        assert targets, "nothing to fetch"
        run = _Run(targets[0].repo_id, self._clock, on_change)
        try:
            proc = self._spawn(self.argv(targets), dict(env))
        except OSError as exc:
            message = f"Cannot start the fetch worker ({self._python}): {exc}."
            log.error("%s", message)
            run.state = replace(run.state, error=FetchError("other", message))
            on_change(run.state)
            return run.state
        pid = proc.pid
        self._reaper.watch(pid)
        log.info("fetching %s (worker pid %d)", ", ".join(map(target_arg, targets)), pid)
        assert proc.stdout is not None and proc.stderr is not None
        fds = os.dup(proc.stdout.fileno()), os.dup(proc.stderr.fileno())
        proc.stdout.close()
        proc.stderr.close()
        returncode: int | None = None
        try:
            async with anyio.create_task_group() as pumps:
                pumps.start_soon(pump, fds[0], LinePump(lambda _: None, run.on_line))
                pumps.start_soon(pump, fds[1], self._stderr())
                returncode = await self._reaper.wait(pid)
                proc.returncode = returncode
                await self._empty_group(pid)
                pumps.cancel_scope.deadline = anyio.current_time() + PIPE_DRAIN_S
        finally:
            if returncode is None:
                with anyio.CancelScope(shield=True):
                    returncode = await self._stop(pid)
                    proc.returncode = returncode
                log.info("fetch worker (pid %d) stopped: %s", pid, describe_exit(returncode))
        assert returncode is not None  # set by the wait or by the stop
        return self._final(run, returncode)

    def _final(self, run: _Run, returncode: int) -> FetchState:
        if run.state.error is None and not (run.finished and returncode == 0):
            message = (
                f"The fetch of {run.state.model} stopped without saying why: the worker "
                f"{describe_exit(returncode)}. vllmd's log has its output."
            )
            run.state = replace(run.state, error=FetchError("other", message), rate_bps=0.0)
            run.notify()
        if run.state.error is not None:
            log.warning("fetch of %s failed: %s", run.state.model, run.state.error.message)
        else:
            log.info("fetched %s: %d bytes", run.state.model, run.state.done)
        return run.state

    async def _stop(self, pid: int) -> int:
        """SIGTERM the worker's group, wait, SIGKILL it; its exit code once the group is empty."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        returncode: int | None = None
        with anyio.move_on_after(self._stop_timeout_s):
            returncode = await self._reaper.wait(pid)
        if returncode is None:
            log.warning("fetch worker (pid %d) ignored SIGTERM; killing its group", pid)
            kill_group(pid)
            with anyio.move_on_after(self._kill_wait_s):
                returncode = await self._reaper.wait(pid)
        await self._empty_group(pid)
        return -signal.SIGKILL if returncode is None else returncode

    async def _empty_group(self, pgid: int) -> None:
        """Kill what is left in the worker's group and wait, to a deadline, until none lives."""
        with anyio.move_on_after(self._kill_wait_s):
            while self._members(pgid):
                kill_group(pgid)
                with anyio.move_on_after(0.05):
                    await self._reaper.any_exit()
        if left := self._members(pgid):
            log.error("process(es) %s of the fetch worker's group survived SIGKILL", left)
