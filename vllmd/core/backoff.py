"""The crash back-off: 1, 2, 4 … seconds, capped, forgiven after a long healthy run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays between crash restarts, counted from the exit.

    The n-th crash in a row waits ``base_s * 2**(n-1)``, at most ``cap_s``. A run that had been
    ready for ``reset_after_s`` when it ended starts the count again.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    reset_after_s: float = 600.0
    failures: int = 0

    def next_delay(self, ready_for_s: float | None) -> float:
        """The delay before restarting after an exit; ``ready_for_s``: how long it was ready."""
        if ready_for_s is not None and ready_for_s >= self.reset_after_s:
            self.failures = 0
        delay = min(self.cap_s, self.base_s * 2.0**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget past crashes (a new configuration starts with a clean slate)."""
        self.failures = 0
