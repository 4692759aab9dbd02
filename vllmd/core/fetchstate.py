"""A fetch as the daemon sees it: the worker's event lines, the state they add up to, the rate.

The worker (``python -m vllmd.fetch``) writes one JSON object per line on stdout; this module is
the one schema of those lines (:data:`Event`, :func:`encode_event`, :func:`decode_event`), so the
worker and the daemon cannot drift apart. :class:`RateWindow` turns progress samples into a rate
over the last seconds; :class:`FetchState` is what the health shows. The advice for each kind of
failure is the crash forensics' own (:mod:`vllmd.core.causes`). Pure: no I/O, time is passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import msgspec

from vllmd.core.causes import CAUSES, Cause

__all__ = [
    "DoneEvent",
    "ErrorEvent",
    "ErrorKind",
    "Event",
    "FetchError",
    "FetchState",
    "PlanEvent",
    "ProgressEvent",
    "RateWindow",
    "advice",
    "decode_event",
    "encode_event",
]

ErrorKind = Literal["not-found", "unauthorized", "gated", "disk-full", "network", "other"]


class PlanEvent(msgspec.Struct, tag_field="event", tag="plan", frozen=True):
    """The plan is known, before any byte moves: its size, what is already on disk, its files."""

    total: int
    present: int
    files: int


class ProgressEvent(msgspec.Struct, tag_field="event", tag="progress", frozen=True):
    """Bytes of the plan on disk now (what was present counts), out of ``total``."""

    done: int
    total: int


class DoneEvent(msgspec.Struct, tag_field="event", tag="done", frozen=True):
    """Every file of the plan is in the cache and its records are written."""

    total: int


class ErrorEvent(msgspec.Struct, tag_field="event", tag="error", frozen=True, omit_defaults=True):
    """The fetch failed; ``needed``/``free`` (bytes) come with ``disk-full``."""

    kind: ErrorKind
    message: str
    needed: int | None = None
    free: int | None = None


Event = PlanEvent | ProgressEvent | DoneEvent | ErrorEvent
_ENCODER = msgspec.json.Encoder()
_DECODER: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """One line of the worker's stdout, newline included."""
    return _ENCODER.encode(event) + b"\n"


def decode_event(line: bytes | str) -> Event | None:
    """The event on ``line``; ``None`` for anything else (a stray line is not an event)."""
    try:
        return _DECODER.decode(line)
    except msgspec.DecodeError:
        return None


@dataclass(frozen=True, slots=True)
class FetchError:
    """Why a fetch failed: a kind, a sentence with advice, and for a full disk the figures."""

    kind: ErrorKind
    message: str
    needed: int | None = None
    free: int | None = None


@dataclass(frozen=True, slots=True)
class FetchState:
    """One fetch for ``model`` now: bytes on disk out of ``total`` (``None`` before the plan)."""

    model: str
    total: int | None = None
    done: int = 0
    rate_bps: float = 0.0
    error: FetchError | None = None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; ``None`` without a total or a rate."""
        if self.total is None or self.rate_bps <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate_bps


class RateWindow:
    """Bytes per second over the samples of the last ``window_s`` seconds (at least two)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, t: float, done: int) -> None:
        """Record that ``done`` bytes were on disk at monotonic time ``t``."""
        self._samples.append((t, done))
        while len(self._samples) > 2 and self._samples[1][0] <= t - self._window_s:
            self._samples.popleft()

    @property
    def rate_bps(self) -> float:
        """The rate over the window; 0 until two samples are apart in time, never negative."""
        if len(self._samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return max(d1 - d0, 0) / (t1 - t0) if t1 > t0 else 0.0


_CAUSE_OF = {
    "not-found": "model-not-found",
    "unauthorized": "hf-unauthorized",
    "disk-full": "disk-full",
}


def advice(kind: ErrorKind, status: int | None = None) -> Cause | None:
    """The forensics' cause and advice for a failed fetch of ``kind`` (``status``: HTTP code).

    A gated repository answers 401 without a token (accept the terms, add one) and 403 when the
    token's account may not read it (request access).
    """
    name = ("hf-forbidden" if status == 403 else "hf-gated") if kind == "gated" else None
    name = name or _CAUSE_OF.get(kind)  # vLLM's own network advice does not fit a fetch
    return next((cause for cause in CAUSES if cause.kind == name), None)
