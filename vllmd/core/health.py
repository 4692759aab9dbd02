"""What the health says: a pure function from what the daemon sees to a result and a message.

The daemon gathers a :class:`Snapshot` (what runs, what the probe saw, the progress, the last exit)
and calls :func:`evaluate` with the current monotonic time. The answer, a :class:`Verdict`, is what
``RUN_DIR/health.json`` holds (CONTRACT.md §3). No I/O and no clock of its own: every test can walk
through 35 minutes in microseconds.

The loading clock starts when a configuration is launched (``config_started_at``); a crash
restart keeps it, a new configuration starts a new one. How long loading may take is
:func:`loading_deadline`.

A fetch of a model's files (:class:`Fetching`) shows in ``detail.fetch`` with its download
sentence (:func:`fetch_message`). While an old model serves, the verdict stays exactly the ready
one; with none, the fetch is the loading (its sentence in the message, its movement keeping the
stall rule away) and a failed fetch is the failure, with the forensics' advice.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from vllmd.core.exits import describe_exit, signal_name
from vllmd.core.fetchstate import FetchState, advice
from vllmd.core.units import human_bytes

JSON = str | int | float | bool | None | list["JSON"] | dict[str, "JSON"]
"""A value that ``json.dumps`` writes as is."""

Result = Literal["success", "loading", "failure"]

NO_MODEL_MESSAGE = 'No model selected. Run the "Set Model" action.'
LOADING_MESSAGE = (
    "The vLLM API is starting. A first-time model download plus load can take 30+ minutes; "
    "loading an already-cached model can take 15+ minutes. Exact time depends on your hardware "
    "resources and network bandwidth."
)
READY_MESSAGE = "The vLLM API is ready"
WEDGED_MESSAGE = (
    "The vLLM API stopped answering its health check while its process was still running; "
    "vLLM is being restarted."
)
SET_MODEL_TASK: dict[str, str] = {
    "action": "set-model",
    "name": "Set Model",
    "severity": "critical",
    "reason": "Select which AI model vLLM should serve",
}
"""The StartOS task that points a person at the Set Model action."""


class Phase(StrEnum):
    """Where vLLM is in its life, as the daemon sees it."""

    NO_MODEL = "no-model"
    """No model is selected: nothing runs."""
    STARTING = "starting"
    """vLLM runs but the probe has not yet seen ``/health`` answer 200."""
    READY = "ready"
    """The port listens and ``GET /health`` answers 200."""
    CRASHED = "crashed"
    """vLLM exited on its own and waits for its back-off before the restart."""
    WEDGED = "wedged"
    """vLLM was ready, then failed its probe while its process lived: it is being restarted."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What vLLM's output says about why it stopped.

    Attributes:
        line: the most telling line it printed (masked, one line, shortened when very long).
        cause: what went wrong in words a person understands, when the line is recognised.
        advice: what to do about it, when the line is recognised.
        kind: a short stable name of the cause for machines (``"out-of-memory"``, ``"hf-gated"``…).
    """

    line: str
    cause: str | None = None
    advice: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How the last vLLM ended, when it ended on its own.

    Attributes:
        returncode: its exit status; negative when killed by a signal (``-9``: SIGKILL).
        restart_delay_s: the back-off before the restart (counted from the exit).
        diagnosis: what its output says, when it said anything telling.
    """

    returncode: int
    restart_delay_s: float
    diagnosis: Diagnosis | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """What is happening while vLLM loads.

    Attributes:
        downloaded_bytes: how much the model cache grew since this configuration was launched.
        download_rate_bps: bytes per second over the last few samples (0.0 when it stopped).
        loading: the step vLLM reports, e.g. ``"Loading weights: shard 3/8."``.
        last_progress_at: monotonic time anything last moved (the cache grew, or a new step).
    """

    downloaded_bytes: int | None = None
    download_rate_bps: float | None = None
    loading: str | None = None
    last_progress_at: float | None = None


NO_PROGRESS = Progress()


@dataclass(frozen=True, slots=True)
class Fetching:
    """A fetch of a model's files into the cache, as the health shows it.

    Attributes:
        state: what the fetch reports (bytes on disk out of the plan's total, rate, error).
        moved_at: monotonic time its bytes last moved (or its plan came): a fetch that moves is
            never a stall.
        retry_in_s: for a failed fetch, the back-off before it is tried again.
    """

    state: FetchState
    moved_at: float | None = None
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the health depends on, at one moment.

    Attributes:
        phase: where vLLM is.
        config_started_at: monotonic time the current configuration was launched (kept over
            crash restarts, reset by a new configuration); ``None`` when nothing was launched.
        progress: what the loading is doing.
        exit: how the last vLLM ended (needed for :attr:`Phase.CRASHED`).
        stuck_pids: members of an old process group that survived SIGKILL (stuck in a driver).
        store_problem: why ``store.json`` was not used (the last good configuration is kept).
        model: the model being served, for ``detail``.
        fetch: the fetch under way, or the last one when it failed (until the next one starts or
            its model is launched).
    """

    phase: Phase
    config_started_at: float | None = None
    progress: Progress = NO_PROGRESS
    exit: ExitInfo | None = None
    stuck_pids: tuple[int, ...] = ()
    store_problem: str | None = None
    model: str | None = None
    fetch: Fetching | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``health.json`` says, less the ``since`` and ``pid`` that the publisher adds.

    ``detail`` holds only values that change when something real changes (no elapsed counters),
    so the file is rewritten on real change only.
    """

    result: Result
    message: str
    task: dict[str, str] | None
    detail: dict[str, JSON]


def timeout_message(limit_s: float) -> str:
    """The failure message once loading took longer than ``limit_s`` (whole minutes, rounded up)."""
    minutes = math.ceil(limit_s / 60)
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"The vLLM API did not come up within {minutes} {unit}. Check the service logs for errors."
    )


def loading_deadline(snap: Snapshot, grace_s: float, cap_s: float) -> float | None:
    """The monotonic time at which a loading vLLM turns into a failure, if nothing moves before.

    The rule (a documented deviation from a flat grace, issue 3 item 5): loading fails once

    - the grace has passed since the configuration was launched **and** nothing moved (the
      download did not grow, vLLM reported no new step) for the last ``grace_s``; or
    - the hard cap has passed since the launch, whatever moves (``cap_s``, never below the grace).

    So a 40 GB download that keeps growing stays "loading" past 35 minutes, up to the cap; a
    vLLM that shows nothing for the grace fails exactly as the spec says. Progress that resumes
    after the failure turns it back into loading (the function is pure; the clock decides).

    Returns ``None`` when there is no loading clock (not starting, or never launched).
    """
    if snap.phase is not Phase.STARTING or snap.config_started_at is None:
        return None
    started = snap.config_started_at
    cap_at = started + max(cap_s, grace_s)
    stall_at = started + grace_s
    moved = (snap.progress.last_progress_at, snap.fetch.moved_at if snap.fetch else None)
    for last in moved:
        if last is not None:
            stall_at = max(stall_at, last + grace_s)
    return min(stall_at, cap_at)


def evaluate(snap: Snapshot, now: float, grace_s: float, cap_s: float) -> Verdict:
    """The health for ``snap`` at monotonic time ``now`` (CONTRACT.md §3, one row per phase).

    Args:
        snap: what the daemon sees.
        now: the current monotonic time, on the same clock as the snapshot's times.
        grace_s: how long loading may show no progress (``--loading-grace``).
        cap_s: how long loading may take at most, even while it progresses (``--loading-cap``).
    """
    detail: dict[str, JSON] = {"phase": str(snap.phase)}
    if snap.model is not None:
        detail["model"] = snap.model
    if snap.stuck_pids:
        detail["stuck_pids"] = list(snap.stuck_pids)
    if snap.store_problem is not None:
        detail["store_problem"] = snap.store_problem
    if snap.fetch is not None:
        detail["fetch"] = fetch_detail(snap.fetch)

    if snap.phase is Phase.NO_MODEL:
        message = NO_MODEL_MESSAGE
        if snap.store_problem is not None:
            message = f"{message} {_sentence(snap.store_problem)}"
        return Verdict("failure", message, dict(SET_MODEL_TASK), detail)

    if snap.phase is Phase.READY:
        return Verdict("success", READY_MESSAGE, None, detail)

    if snap.phase is Phase.WEDGED:
        return Verdict("failure", WEDGED_MESSAGE, None, detail)

    if snap.phase is Phase.CRASHED:
        if snap.exit is None:  # the daemon always gives one; stay truthful if it does not
            return Verdict("failure", "vLLM exited and is waiting to restart.", None, detail)
        detail["exit"] = _exit_detail(snap.exit)
        return Verdict("failure", crash_message(snap.exit), None, detail)

    # STARTING
    if snap.exit is not None:
        detail["last_exit"] = _exit_detail(snap.exit)
    detail.update(_progress_detail(snap.progress))
    if snap.fetch is not None and snap.fetch.state.error is not None:
        return Verdict("failure", fetch_message(snap.fetch), None, detail)
    deadline = loading_deadline(snap, grace_s, cap_s)
    if deadline is not None and now >= deadline:
        started = snap.config_started_at
        assert started is not None  # a deadline implies a launch time
        capped = now - started >= max(cap_s, grace_s)
        detail["timeout"] = "cap" if capped else "no-progress"
        limit_s = max(cap_s, grace_s) if capped else grace_s
        return Verdict("failure", timeout_message(limit_s), None, detail)
    progress = progress_text(snap.progress, snap.fetch)
    message = f"{LOADING_MESSAGE} {progress}" if progress else LOADING_MESSAGE
    return Verdict("loading", message, None, detail)


def progress_text(progress: Progress, fetch: Fetching | None = None) -> str:
    """The live part of the loading message: the fetch's sentence (:func:`fetch_message`), else
    ``Downloading: 12.4 GB so far, 48.0 MB/s.`` as the cache grows, and/or ``Loading weights:
    shard 3/8.``; empty when nothing is known."""
    parts: list[str] = []
    downloaded = progress.downloaded_bytes
    rate = progress.download_rate_bps
    if fetch is not None:
        parts.append(fetch_message(fetch))
    elif downloaded is not None and downloaded > 0:
        if rate is not None and rate > 0:
            parts.append(f"Downloading: {human_bytes(downloaded)} so far, {human_bytes(rate)}/s.")
        else:
            parts.append(f"Downloaded: {human_bytes(downloaded)} so far.")
    if progress.loading:
        parts.append(_sentence(progress.loading))
    return " ".join(parts)


def fetch_message(fetch: Fetching) -> str:
    """What a fetch is doing, in one or two sentences.

    ``Downloading Org/Model: 12.4 of 40.0 GB (31 %), 48 MB/s, about 10 min left.`` while bytes
    move; for a failed fetch, why and what to do (the forensics' advice for the same cause), and
    when it is tried again.
    """
    state = fetch.state
    error = state.error
    if error is None:
        return _download_sentence(state)
    cause = advice(error.kind)
    if error.kind == "disk-full" and error.needed is not None and error.free is not None:
        what = (
            f"Not enough space to download {state.model}: it needs {human_bytes(error.needed)} "
            f"more and the data volume has {human_bytes(error.free)} free."
        )
    elif cause is not None:
        what = f"Could not download {state.model}: {_sentence(cause.cause)}"
    else:
        what = f"Could not download {state.model}: {_sentence(error.message)}"
    parts = [what]
    if cause is not None:
        parts.append(_sentence(cause.advice))
    if fetch.retry_in_s is not None:
        parts.append(f"vllmd tries again in {math.ceil(fetch.retry_in_s)} s.")
    return " ".join(parts)


def _download_sentence(state: FetchState) -> str:
    head = f"Downloading {state.model}:"
    if state.total is None:
        return f"{head} preparing." if state.done <= 0 else f"{head} {human_bytes(state.done)}."
    if state.done >= state.total:
        return f"Downloaded {state.model}: {human_bytes(state.total)}."
    total = human_bytes(state.total)
    number, unit = total.split(" ")
    scale = float(state.total) / float(number) if float(number) else 1.0
    done = state.done
    percent = math.floor(100 * done / state.total)
    text = f"{head} {done / scale:.1f} of {number} {unit} ({percent} %)"
    if state.rate_bps > 0:
        eta = state.eta_s
        text += f", {_rate(state.rate_bps)}"
        if eta is not None:
            text += f", {_time_left(eta)}"
    return f"{text}."


def _rate(bps: float) -> str:
    """``48 MB/s``, ``4.5 MB/s``: whole numbers from 10 up, one decimal below."""
    number, unit = human_bytes(bps).split(" ")
    value = float(number)
    return f"{value:.0f} {unit}/s" if value >= 10 or unit == "B" else f"{value:.1f} {unit}/s"


def _time_left(seconds: float) -> str:
    """``about 10 min left``, ``about 1 h 5 min left``, ``less than a minute left``."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute left"
    if minutes < 60:
        return f"about {minutes} min left"
    hours, rest = divmod(minutes, 60)
    return f"about {hours} h {rest} min left" if rest else f"about {hours} h left"


def fetch_detail(fetch: Fetching) -> dict[str, JSON]:
    """``detail.fetch``: the figures, the error (kind and the fetch's own words), the sentence."""
    state = fetch.state
    eta = state.eta_s
    error = state.error
    return {
        "model": state.model,
        "done": state.done,
        "total": state.total,
        "rate_bps": round(state.rate_bps),
        "eta_s": None if eta is None else round(eta),
        "error": None if error is None else {"kind": error.kind, "message": error.message},
        "message": fetch_message(fetch),
    }


def crash_message(info: ExitInfo) -> str:
    """``vLLM exited with status 1 and will be restarted in 4 s. Last error: … What to do …``"""
    parts = [f"vLLM {describe_exit(info.returncode)} and will be restarted {_delay(info)}."]
    diagnosis = info.diagnosis
    if diagnosis is not None:
        parts.append(f"Last error: {_sentence(diagnosis.line)}")
        if diagnosis.cause:
            parts.append(_sentence(diagnosis.cause))
        if diagnosis.advice:
            parts.append(_sentence(diagnosis.advice))
    elif info.returncode == -signal.SIGKILL:
        parts.append(
            "It printed no error. A SIGKILL that vllmd did not send usually comes from the "
            "kernel's out-of-memory killer: pick a smaller preset in Set Model."
        )
    else:
        parts.append("It printed no error line; check the service logs.")
    return " ".join(parts)


def _delay(info: ExitInfo) -> str:
    if info.restart_delay_s <= 0:
        return "now"
    return f"in {math.ceil(info.restart_delay_s)} s"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?", ")", "…")) else f"{text}."


def _exit_detail(info: ExitInfo) -> dict[str, JSON]:
    out: dict[str, JSON] = {
        "returncode": info.returncode,
        "signal": signal_name(info.returncode),
        "restart_delay_s": info.restart_delay_s,
    }
    diagnosis = info.diagnosis
    out["line"] = diagnosis.line if diagnosis else None
    out["cause"] = diagnosis.kind if diagnosis else None
    out["advice"] = diagnosis.advice if diagnosis else None
    return out


def _progress_detail(progress: Progress) -> dict[str, JSON]:
    out: dict[str, JSON] = {}
    if progress.downloaded_bytes is not None:
        rate = progress.download_rate_bps
        out["download"] = {
            "bytes": progress.downloaded_bytes,
            "rate_bps": None if rate is None else round(rate),
        }
    if progress.loading is not None:
        out["loading"] = progress.loading
    return out
