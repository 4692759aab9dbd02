"""What the reconciler does next: a pure function of what the files want, what runs, and the time.

The reconciler reads (the files, the child it started, the restart it scheduled), calls
:func:`decide`, and acts on the answer, again and again until the answer is "nothing now", the way
a Kubernetes controller's reconcile is a function of observed and desired state. Timing rules live
here too: when a burst of file changes has settled (:func:`settled_at`). No I/O, no clock: every
rule of CONTRACT §2.3 and §2.6 is a table row in ``tests/test_decide.py``.

Make before break: a desired launch whose model is not fully in the cache is *fetched* first
(:attr:`Act.FETCH`), while a ready vLLM of another configuration keeps serving; only a complete
fetch lets the usual rules replace it, so the outage is the load alone. A change of mind cancels
the fetch (:attr:`Act.CANCEL_FETCH`); a failed one is tried again after its back-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vllmd.core.launch import Launch

__all__ = [
    "COOLDOWN_S",
    "QUIET_S",
    "Act",
    "Decision",
    "Fetch",
    "Running",
    "decide",
    "settled_at",
]

COOLDOWN_S = 1.0
"""For this long after a start, a change waits for the files to be quiet before it acts..."""
QUIET_S = 0.05
"""...for this long, so that a burst of writes ends in one more restart, with the last content."""


class Act(StrEnum):
    """What to do with vLLM."""

    NOTHING = "nothing"
    """What runs is what the files want (or a restart is not due yet)."""
    START = "start"
    """Start the desired launch as a new configuration: a new loading clock, a clean back-off."""
    RESTART = "restart"
    """Start the same launch again after a crash or a wedge: the loading clock keeps running."""
    STOP = "stop"
    """No model is selected: stop what runs (if it still does) and idle."""
    REPLACE = "replace"
    """The configuration changed: stop what runs; the start of the new one follows."""
    STOP_WEDGED = "stop-wedged"
    """vLLM stopped answering while its process lives: stop it; its restart follows the back-off."""
    FETCH = "fetch"
    """Fetch the desired launch's model into the cache; what serves keeps serving meanwhile."""
    CANCEL_FETCH = "cancel-fetch"
    """The fetch under way is for a launch no longer wanted: stop it (its partial files stay)."""


@dataclass(frozen=True, slots=True)
class Running:
    """The vLLM the reconciler last started, as it is now.

    Attributes:
        launch: what it was started with.
        done: its process group is gone (it exited, or was stopped, and its group emptied).
        wedged: it was ready and then failed its probe too often while its process lived.
        ready: its probe saw it ready (and it has not failed since).
    """

    launch: Launch
    done: bool = False
    wedged: bool = False
    ready: bool = False


@dataclass(frozen=True, slots=True)
class Fetch:
    """The fetch the reconciler started last, as it is now.

    Attributes:
        launch: the launch whose model it fetches (compared with the desired one).
        active: its worker runs.
        retry_at: when an ended, failed fetch may be tried again (its back-off); ``None`` while
            it runs.
    """

    launch: Launch
    active: bool = True
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do, and when.

    Attributes:
        act: what to do.
        at: the monotonic time it is due; ``None``: now. A decision due later is a promise to
            look again then ("restart at T"), not a reason to wait for it blindly: anything that
            wakes the reconciler before asks again.
    """

    act: Act
    at: float | None = None

    def due(self, now: float) -> bool:
        """Whether to act at ``now``."""
        return self.act is not Act.NOTHING and (self.at is None or self.at <= now)


NOTHING = Decision(Act.NOTHING)


def decide(
    desired: Launch | None,
    running: Running | None,
    restart_at: float | None,
    *,
    cached: bool = True,
    fetch: Fetch | None = None,
) -> Decision:
    """The next step towards running ``desired`` (CONTRACT §2.3 and §2.6).

    Args:
        desired: the launch the files describe now; ``None`` when no model is selected.
        running: the vLLM started last, ``None`` when none was (or it was stopped for good).
        restart_at: when the crash (or wedge) restart of ``running`` is due, if one is scheduled.
        cached: every file ``desired`` needs from the hub is in the cache (or it needs none).
        fetch: the fetch started last, if one runs or failed and waits for its retry.

    The order of the rules is the order of precedence: a fetch for a launch no longer wanted is
    cancelled; no model stops everything; a desired launch that is not cached is fetched first,
    while a ready vLLM of another configuration keeps serving (make before break); otherwise a
    changed configuration replaces what runs at once, whatever the back-off; a wedged vLLM is
    stopped; an exited one restarts when its back-off is over.
    """
    if fetch is not None and fetch.active and fetch.launch != desired:
        return Decision(Act.CANCEL_FETCH)
    if desired is None:
        return NOTHING if running is None else Decision(Act.STOP)
    if not cached:
        if running is not None and not running.done:
            if running.launch == desired:  # it loaded its weights already: leave it be
                return Decision(Act.STOP_WEDGED) if running.wedged else NOTHING
            if running.wedged or not running.ready:  # nothing worth keeping serves
                return Decision(Act.REPLACE)
        return _fetch(desired, fetch)
    if running is None:
        return Decision(Act.START)
    if running.launch != desired:
        return Decision(Act.START) if running.done else Decision(Act.REPLACE)
    if not running.done:
        return Decision(Act.STOP_WEDGED) if running.wedged else NOTHING
    if restart_at is None:  # we stopped it for a change that was then undone: start it again
        return Decision(Act.START)
    return Decision(Act.RESTART, at=restart_at)


def _fetch(desired: Launch, fetch: Fetch | None) -> Decision:
    """Fetch ``desired``'s model: now, or after the back-off of the last failed try for it."""
    if fetch is None or fetch.launch != desired:
        return Decision(Act.FETCH)
    if fetch.active:
        return NOTHING
    return Decision(Act.FETCH, at=fetch.retry_at)


def settled_at(first_change: float, last_change: float, last_start: float) -> float:
    """When a burst of file changes (the first and the last not yet read) may be acted on.

    The first change after a quiet time is acted on at once. A change that arrives during a
    restart or within :data:`COOLDOWN_S` after it waits until the files have been quiet for
    :data:`QUIET_S`, but never longer than the cool-down after it came: a writer that never
    stops cannot hold a change back forever.
    """
    if first_change - last_start >= COOLDOWN_S:
        return first_change
    return min(last_change + QUIET_S, first_change + COOLDOWN_S)
