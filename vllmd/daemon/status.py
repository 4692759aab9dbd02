"""What the daemon knows about vLLM, for the health verdict.

Two kinds of knowledge with different writers:

- the record (phase, loading clock, last exit, model…): a :class:`~vllmd.core.health.Snapshot`
  written by the reconciler alone, through :meth:`Status.set`;
- what vLLM's output shows while it loads (the progress and the tail of its output): fed by the
  output pumps and the download sampler, cleared by the reconciler when it starts a vLLM.

Both wake whoever waits in :meth:`Status.changed` (the health publisher, the probe).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio

from vllmd.core.forensics import OutputTail
from vllmd.core.health import Phase, Snapshot
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

    def set(self, **changes: Any) -> None:  # Any: checked by dataclasses.replace at run time
        """Change fields of the record (``phase=…, exit=…``) and wake the waiters.

        The reconciler is the only caller: one writer, so the record never mixes two stories.
        """
        self._record = dataclasses.replace(self._record, **changes)
        self.touch()

    def touch(self) -> None:
        """Wake whoever waits in :meth:`changed` (something they read changed)."""
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        """Wait for the next :meth:`touch` (or :meth:`set`)."""
        await self._changed.wait()

    def snapshot(self) -> Snapshot:
        """The pure health input for this moment: the record with the current progress."""
        return dataclasses.replace(self._record, progress=self.progress.progress())
