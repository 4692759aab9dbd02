"""What loading is doing: vLLM's own progress lines, and the growth of the model cache.

Two sources, both cheap:

- :func:`loading_step` reads a line of vLLM's output (``Loading safetensors checkpoint shards:
  38% Completed | 3/8 [...]``) and names the step: ``Loading weights: shard 3/8.``
- :class:`DownloadMeter` is fed the size of ``DATA/models`` every few seconds (the daemon walks
  the tree in a worker thread, see :func:`vllmd.state.disk.tree_size`) and turns it into bytes
  downloaded, a rate and the last time it grew.

:class:`ProgressTracker` holds both for one configuration and hands the health a
:class:`~vllmd.core.health.Progress`. Pure: no I/O, time is passed in (monotonic seconds).
"""

from __future__ import annotations

import re
from collections import deque

from vllmd.core.health import Progress

__all__ = ["DownloadMeter", "ProgressTracker", "loading_step"]

# vLLM's weight loaders print one tqdm line per shard with a trailing newline
# (vllm/model_executor/model_loader/weight_utils.py, _BAR_FORMAT = "{desc}: {percentage:3.0f}%
# Completed | {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]\n"),
# with desc "Loading safetensors checkpoint shards", "Loading pt checkpoint shards",
# "Loading np_cache checkpoint shards", "Loading fastsafetensors checkpoint shards",
# "Multi-thread loading shards", "Multi-thread loading pt checkpoint shards"...
_SHARDS = re.compile(r"[Ll]oading [\w -]*?shards: *\d+% Completed \| *(\d+)/(\d+)")
# CUDA graph capture is a plain tqdm bar redrawn with "\r":
# "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|████▌     | 30/67 [00:01<...]"
_GRAPHS = re.compile(r"Capturing CUDA graph[^:\r\n]*: *\d+%\|[^|\r\n]*\| *(\d+)/(\d+)")
_STEPS = (
    (
        re.compile(r"Loading weights took|Model loading took"),
        "Weights loaded; preparing the engine.",
    ),
    (
        re.compile(
            r"for vLLM's torch\.compile|Dynamo bytecode transform|Compiling a graph"
            r"|load the compiled graph"
        ),
        "Compiling the model.",
    ),
    (
        re.compile(r"init engine \(profile, create kv cache, warmup model\) took"),
        "Engine ready; starting the API server.",
    ),
)
_HINTS = ("shards", "CUDA graph", "took", "ompil", "Dynamo")


def loading_step(line: str) -> str | None:
    """The loading step that a line of vLLM's output reports, or ``None``.

    ``line`` may hold several ``\\r``-separated redraws of a progress bar; the last one that
    says something wins. Steps: ``Loading weights: shard 3/8.``, ``Weights loaded; preparing
    the engine.``, ``Compiling the model.``, ``Capturing CUDA graphs: 30/67.``,
    ``Engine ready; starting the API server.``
    """
    if not any(hint in line for hint in _HINTS):
        return None  # the common case, cheaply
    for segment in reversed(line.split("\r")):
        match = _SHARDS.search(segment)
        if match:
            return f"Loading weights: shard {match[1]}/{match[2]}."
        match = _GRAPHS.search(segment)
        if match:
            return f"Capturing CUDA graphs: {match[1]}/{match[2]}."
        for pattern, step in _STEPS:
            if pattern.search(segment):
                return step
    return None


class DownloadMeter:
    """Bytes downloaded into the model cache, the rate, and when it last grew.

    Fed ``(t, total)`` samples, ``total`` being the size of ``DATA/models`` at monotonic time
    ``t``. Downloaded bytes are the **growth since the last** :meth:`reset` (called when a
    configuration is launched), counting only increases: a cache that shrinks (Delete Model
    Cache removing another model) does not hide what this download added. The rate is the
    growth over the samples of the last ``window_s`` seconds (at least the last two samples).
    """

    def __init__(self, window_s: float = 20.0) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()  # (t, cumulative growth)
        self._last_total: int | None = None
        self._growth = 0
        self._last_growth_at: float | None = None
        self._reset_at = float("-inf")

    def reset(self, t: float) -> None:
        """Start counting afresh at ``t``: the next sample taken at ``t`` or later is the baseline.

        A sample from before ``t`` (a walk of the tree that began before the launch) is ignored.
        """
        self._reset_at = t
        self._samples.clear()
        self._last_total = None
        self._growth = 0
        self._last_growth_at = None

    def sample(self, t: float, total_bytes: int) -> None:
        """Record that the cache held ``total_bytes`` at time ``t``."""
        if t < self._reset_at:
            return
        if self._last_total is not None and total_bytes > self._last_total:
            self._growth += total_bytes - self._last_total
            self._last_growth_at = t
        self._last_total = total_bytes
        self._samples.append((t, self._growth))
        while len(self._samples) > 2 and self._samples[1][0] <= t - self._window_s:
            self._samples.popleft()

    @property
    def downloaded_bytes(self) -> int | None:
        """Growth since the reset; ``None`` before the second sample."""
        return self._growth if len(self._samples) >= 2 else None

    @property
    def rate_bps(self) -> float | None:
        """Bytes per second over the window; ``None`` until two samples are apart in time."""
        if len(self._samples) < 2:
            return None
        (t0, g0), (t1, g1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return (g1 - g0) / (t1 - t0)

    @property
    def last_progress_at(self) -> float | None:
        """The time of the last sample at which the cache had grown."""
        return self._last_growth_at


class ProgressTracker:
    """Progress of one configuration: the download meter and the last step vLLM reported."""

    def __init__(self, window_s: float = 20.0) -> None:
        self.meter = DownloadMeter(window_s)
        self._step: str | None = None
        self._step_at: float | None = None

    def reset(self, t: float) -> None:
        """A configuration is launched at ``t``: forget everything."""
        self.meter.reset(t)
        self._step = None
        self._step_at = None

    def restarted(self) -> None:
        """vLLM restarts after a crash: its steps start over, the download count goes on."""
        self._step = None

    def sample(self, t: float, total_bytes: int) -> None:
        """Record the size of the model cache at ``t``."""
        self.meter.sample(t, total_bytes)

    def feed(self, t: float, text: str) -> bool:
        """Read vLLM output (one or more lines); return whether the step changed."""
        if not any(hint in text for hint in _HINTS):
            return False
        step: str | None = None
        for line in reversed(text.split("\n")):
            step = loading_step(line)
            if step is not None:
                break
        if step is None or step == self._step:
            return False
        self._step = step
        self._step_at = t
        return True

    def progress(self) -> Progress:
        """The :class:`~vllmd.core.health.Progress` for the health."""
        moved = [at for at in (self.meter.last_progress_at, self._step_at) if at is not None]
        return Progress(
            downloaded_bytes=self.meter.downloaded_bytes,
            download_rate_bps=self.meter.rate_bps,
            loading=self._step,
            last_progress_at=max(moved) if moved else None,
        )
