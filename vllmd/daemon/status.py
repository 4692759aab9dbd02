"""What the daemon knows about vLLM, for the health verdict.

Two kinds of knowledge with different writers:

- the record (phase, loading clock, last exit, model…): a :class:`~vllmd.core.health.Snapshot`
  written by the reconciler alone, through the transitions (:meth:`Status.started`,
  :meth:`Status.exited`, :meth:`Status.ready`…), each a typed change of a few fields;
- what vLLM's output shows while it loads (the progress and the tail of its output): fed by the
  output pumps and the download sampler, cleared by the reconciler when it starts a vLLM.

Both wake whoever waits in :meth:`Status.changed` (the health publisher, the probe).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import anyio

from vllmd.core.forensics import OutputTail
from vllmd.core.health import ExitInfo, Fetching, Phase, Snapshot
from vllmd.core.progress import ProgressTracker

__all__ = ["Status"]


class Status:
    """The daemon's view of vLLM, read by the health publisher and the probe."""

    def __init__(self) -> None:
        self._record = Snapshot(phase=Phase.NO_MODEL)
        self.progress = ProgressTracker()
        """What loading is doing: fed by vLLM's output lines and the cache sampler."""
        self.tail = OutputTail()
        """The end of vLLM's output, where the error that explains a crash usually is."""
        self._changed = anyio.Event()

    @property
    def phase(self) -> Phase:
        """Where vLLM is."""
        return self._record.phase

    @property
    def record(self) -> Snapshot:
        """The reconciler's record (its ``progress`` is not kept here: see :meth:`snapshot`)."""
        return self._record

    # The transitions: the reconciler is the only caller (one writer, so the record never mixes
    # two stories). mypy checks each ``replace`` against the record's fields.

    def started(self, model: str | None, *, new_config_at: float | None) -> None:
        """A vLLM was started for ``model`` (or its files are fetched first, with no old model
        serving): loading, no stuck processes. ``new_config_at``: a new
        configuration's launch time (a new loading clock, the last exit forgotten); ``None`` for a
        restart of the same one (both kept)."""
        record = replace(self._record, phase=Phase.STARTING, stuck_pids=(), model=model)
        if new_config_at is not None:
            record = replace(record, config_started_at=new_config_at, exit=None)
        self._become(record)

    def replacing(self, at: float) -> None:
        """The configuration changed and the running vLLM stops for it: loading from ``at``."""
        self._become(replace(self._record, phase=Phase.STARTING, config_started_at=at))

    def ready(self) -> None:
        """The probe saw ``/health`` answer 200."""
        self._become(replace(self._record, phase=Phase.READY))

    def wedged(self) -> None:
        """The ready vLLM stopped answering its probe while its process lives."""
        self._become(replace(self._record, phase=Phase.WEDGED))

    def exited(
        self,
        phase: Literal[Phase.CRASHED, Phase.WEDGED],
        exit: ExitInfo,
        stuck_pids: tuple[int, ...],
    ) -> None:
        """vLLM ended (on its own: ``CRASHED``; stopped because wedged: ``WEDGED``) and waits for
        its restart; ``stuck_pids`` survived the kill of its group."""
        self._become(replace(self._record, phase=phase, exit=exit, stuck_pids=stuck_pids))

    def no_model(self) -> None:
        """No model is selected: nothing runs, nothing is loading, no exit to tell."""
        self._become(
            replace(
                self._record, phase=Phase.NO_MODEL, exit=None, config_started_at=None, model=None
            )
        )

    def fetching(self, fetch: Fetching | None) -> None:
        """What the fetch of a model's files shows now (``None``: no fetch to show)."""
        if fetch != self._record.fetch:
            self._become(replace(self._record, fetch=fetch))

    def store_read(self, problem: str | None) -> None:
        """``store.json`` was read: why it was not used (``None``: it was)."""
        if problem != self._record.store_problem:
            self._become(replace(self._record, store_problem=problem))

    def _become(self, record: Snapshot) -> None:
        self._record = record
        self.touch()

    def touch(self) -> None:
        """Wake whoever waits in :meth:`changed` (something they read changed)."""
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        """Wait for the next :meth:`touch` (or transition)."""
        await self._changed.wait()

    def snapshot(self) -> Snapshot:
        """The pure health input for this moment: the record with the current progress."""
        return replace(self._record, progress=self.progress.progress())
