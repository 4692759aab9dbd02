"""The fetch of a model's files beside the serving vLLM: one at a time, cancellable, retried.

The reconciler decides (:func:`vllmd.core.decide.decide` answers ``FETCH`` or ``CANCEL_FETCH``)
and asks :class:`Fetches`, which runs the fetcher (the worker process, see
:class:`vllmd.process.fetcher.Fetcher`) as a task of the daemon's root task group, shows its
progress in :class:`~vllmd.daemon.status.Status` and rings the reconciler when it ends. A failed
fetch waits its back-off (:class:`~vllmd.core.backoff.Backoff`) before it is tried again; a
cancelled one leaves its partial files, which the next try resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from vllmd.core.backoff import Backoff
from vllmd.core.decide import Fetch
from vllmd.core.fetchplan import Target
from vllmd.core.fetchstate import FetchState
from vllmd.core.health import Fetching
from vllmd.core.launch import Launch
from vllmd.core.units import human_bytes
from vllmd.daemon.status import Status

__all__ = ["PUBLISH_EVERY_S", "Fetcher", "Fetches"]

log = logging.getLogger("vllmd.daemon.reconcile")  # part of the reconciler: its component name

PUBLISH_EVERY_S = 1.0
"""The health shows a moving fetch's figures this often (the worker reports every 0.5 s)."""


class Fetcher(Protocol):
    """What :class:`Fetches` needs of :class:`vllmd.process.fetcher.Fetcher`."""

    async def run(
        self,
        targets: Sequence[Target],
        env: Mapping[str, str],
        on_change: Callable[[FetchState], None],
    ) -> FetchState: ...


@dataclass(eq=False)
class _Run:
    """One fetch: for which launch, its cancel scope, what it reported last."""

    launch: Launch
    state: FetchState
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    ended: anyio.Event = field(default_factory=anyio.Event)
    moved_at: float | None = None
    retry_at: float | None = None
    published_at: float = float("-inf")


class Fetches:
    """The fetch the reconciler started last.

    Args:
        tasks: the task group the fetch runs in (the daemon's root one: cancelling it on the
            way out kills the worker).
        fetcher: runs the worker and reports its state.
        status: where the health reads the fetch (``detail.fetch``).
        ring: wakes the reconciler when a fetch ends.
        is_complete: whether every file of these targets is in the cache (the fetch's records).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        tasks: TaskGroup,
        fetcher: Fetcher,
        status: Status,
        ring: Callable[[], None],
        is_complete: Callable[[Sequence[Target]], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tasks = tasks
        self._fetcher = fetcher
        self._status = status
        self._ring = ring
        self.is_complete = is_complete
        self._clock = clock
        self._backoff = Backoff()
        self._run: _Run | None = None

    @property
    def view(self) -> Fetch | None:
        """The last fetch as :func:`~vllmd.core.decide.decide` takes it."""
        run = self._run
        if run is None:
            return None
        return Fetch(run.launch, active=not run.ended.is_set(), retry_at=run.retry_at)

    def model(self) -> str | None:
        """The model the last fetch is (or was) for."""
        return None if self._run is None else self._run.state.model

    def start(self, launch: Launch, targets: Sequence[Target]) -> None:
        """Fetch ``targets`` for ``launch`` (with its environment, less the offline rule)."""
        last = self._run
        if last is None or last.launch != launch:
            self._backoff.reset()  # a new model starts with a clean slate
        now = self._clock()
        run = _Run(launch, FetchState(targets[0].repo_id), moved_at=now, published_at=now)
        self._run = run
        log.info("downloading %s before starting it", run.state.model)
        self._status.fetching(Fetching(run.state, moved_at=now))
        self._tasks.start_soon(self._fetch, run, tuple(targets))

    async def cancel(self) -> None:
        """Stop the fetch under way (its partial files stay) and forget it."""
        run = self._run
        if run is None:
            return
        run.scope.cancel()
        await run.ended.wait()
        log.info("stopped the download of %s (what came is kept for next time)", run.state.model)
        self.forget()

    def forget(self) -> None:
        """Forget the last fetch: its model was launched, or is no longer wanted."""
        if self._run is not None:
            self._run = None
            self._status.fetching(None)

    def cancel_now(self) -> None:
        """Ask the fetch under way to stop, without waiting (the daemon's shutdown)."""
        if self._run is not None:
            self._run.scope.cancel()

    async def _fetch(self, run: _Run, targets: tuple[Target, ...]) -> None:
        final: FetchState | None = None
        try:
            with run.scope:
                final = await self._fetcher.run(
                    targets, run.launch.hub_env, lambda state: self._changed(run, state)
                )
        finally:
            run.ended.set()
        if final is None or run.scope.cancel_called or self._run is not run:
            return  # cancelled: whoever cancelled it says so
        run.state = final
        # Even a fetch that succeeded waits before another: a plan the cache's records never
        # confirm must not be fetched again in a tight loop.
        delay = self._backoff.next_delay(None)
        run.retry_at = self._clock() + delay
        if final.error is None:
            log.info("downloaded %s (%s)", final.model, human_bytes(final.total or final.done))
            self._status.fetching(Fetching(final, moved_at=run.moved_at))
        else:
            log.error(
                "could not download %s (%s): %s; trying again in %.0f s",
                final.model,
                final.error.kind,
                final.error.message,
                delay,
            )
            self._status.fetching(Fetching(final, moved_at=run.moved_at, retry_in_s=delay))
        self._ring()

    def _changed(self, run: _Run, state: FetchState) -> None:
        """The worker reported: note movement, and show it (at most every second)."""
        if self._run is not run:
            return
        now = self._clock()
        before = run.state
        if state.done > before.done or state.total != before.total:
            run.moved_at = now
        run.state = state
        news = state.total != before.total or state.error != before.error
        if news or now - run.published_at >= PUBLISH_EVERY_S:
            run.published_at = now
            self._status.fetching(Fetching(state, moved_at=run.moved_at))
