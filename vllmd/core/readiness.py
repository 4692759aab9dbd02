"""Whether one vLLM is ready, from its probe answers: a small state machine.

loading --answer--> ready --no answer x3--> wedged (final for that process)

A vLLM that does not answer while it loads is simply still loading; once it answered, three
failed probes in a row while its process lives mean it is wedged (CONTRACT §2.6), and it is no
longer probed. A process that is stopping is not probed either. One :class:`Readiness` per
process: a restart starts from "loading" again. Pure: the time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["FAILURES_TO_WEDGE", "Readiness", "Seen"]

FAILURES_TO_WEDGE = 3
"""Failed probes in a row, once ready, that make a living vLLM wedged."""


class Seen(StrEnum):
    """What one probe answer changed."""

    NOTHING_NEW = "nothing-new"
    BECAME_READY = "became-ready"
    FAILED = "failed"
    """A failed probe once ready, not yet the last one allowed."""
    WEDGED = "wedged"


@dataclass
class Readiness:
    """The probe's view of one vLLM process.

    Attributes:
        ready_since: monotonic time of its first good answer; ``None`` while it loads.
        failures: failed probes in a row since it was ready.
        wedged: it stopped answering after it was ready (final).
    """

    ready_since: float | None = None
    failures: int = 0
    wedged: bool = False

    @property
    def ready(self) -> bool:
        """Whether it answers (it did, and has not been declared wedged)."""
        return self.ready_since is not None and not self.wedged

    def wants_probe(self, *, alive: bool, stopping: bool) -> bool:
        """Whether to probe it: its process lives, nobody is stopping it, it is not wedged."""
        return alive and not stopping and not self.wedged

    def observe(self, ok: bool, now: float) -> Seen:
        """Take one probe answer (``ok``: ``/health`` answered 200) at monotonic time ``now``."""
        if self.wedged:
            return Seen.NOTHING_NEW
        if ok:
            self.failures = 0
            if self.ready_since is None:
                self.ready_since = now
                return Seen.BECAME_READY
            return Seen.NOTHING_NEW
        if self.ready_since is None:
            return Seen.NOTHING_NEW  # still loading: not answering yet is expected
        self.failures += 1
        if self.failures >= FAILURES_TO_WEDGE:
            self.wedged = True
            return Seen.WEDGED
        return Seen.FAILED
