"""Why vLLM stopped: keep the end of its output, find the telling line, name the cause.

:class:`OutputTail` keeps the last 256 KiB of what vLLM printed. When vLLM exits, :func:`diagnose`
reads it the way a person would: the last line of the last Python traceback (skipping vLLM's own
"see root cause above" wrappers), else the last ``ERROR`` line. Known causes (out of memory, a
gated HuggingFace model, a wrong model id, a full disk, an unsupported GPU…) come with advice.

vLLM runs several processes that print into the same pipe, each line prefixed with its process
(``(EngineCore_DP0 pid=77) ``) and often with a log header
(``ERROR 05-05 07:35:19 [core.py:1136] ``); tqdm redraws progress bars with ``\\r``. The parser
strips those, splits on ``\\r`` too, and follows each process's lines on their own, so
interleaved output does not break a traceback apart.

Pure: no I/O. Everything returned is passed through the key masker again.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from vllmd.core.causes import classify
from vllmd.core.health import Diagnosis
from vllmd.core.masking import masker

__all__ = ["TAIL_BYTES", "Diagnosis", "OutputTail", "diagnose", "misses_a_file"]

OFFLINE_MISSES = frozenset({"offline-missing-file", "network"})
"""What an offline launch's crash shows when vLLM wanted a file vllmd did not fetch: without the
hub, "could not connect" can only mean that a file was missing from the cache."""
_OFFLINE_HINTS = re.compile(
    r"Couldn't instantiate the backend tokenizer|does not appear to have a file named"
    r"|Can't load tokenizer|couldn't find them in the cached files"
)
"""Lines that name no cause of their own, but that an offline launch prints for a file missing
from the cache (vLLM 0.32 without ``tokenizer.json`` says only that it cannot build the
tokenizer)."""

TAIL_BYTES = 256 * 1024
MAX_LINE_CHARS = 400


class OutputTail:
    """The last ``limit`` bytes of a stream, fed in chunks as they arrive.

    Feeding is O(1) amortised: chunks are kept as they came and whole chunks are dropped from
    the front once the budget is exceeded (only the oldest one is ever sliced).
    """

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._trimmed = False

    def feed(self, data: bytes) -> None:
        """Append ``data`` and forget what falls out of the budget."""
        if not data:
            return
        if len(data) >= self._limit:
            self._chunks.clear()
            self._chunks.append(data[-self._limit :])
            self._trimmed = self._trimmed or len(data) > self._limit or self._size > 0
            self._size = self._limit
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self._limit:
            excess = self._size - self._limit
            first = self._chunks[0]
            self._trimmed = True
            if len(first) <= excess:
                self._chunks.popleft()
                self._size -= len(first)
            else:
                self._chunks[0] = first[excess:]
                self._size -= excess

    def text(self) -> str:
        """The kept output as text (undecodable bytes replaced; a line cut by the trim dropped)."""
        text = b"".join(self._chunks).decode("utf-8", errors="replace")
        if self._trimmed:
            _, newline, rest = text.partition("\n")
            text = rest if newline else text
        return text

    def clear(self) -> None:
        """Forget everything (a new vLLM is starting)."""
        self._chunks.clear()
        self._size = 0
        self._trimmed = False

    def __len__(self) -> int:
        return self._size


# ----------------------------------------------------------------------------------------------
# Reading the output

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_PROCESS = re.compile(r"^\((?P<proc>[A-Za-z_][\w-]*(?: [\w.:=-]+)*? pid=\d+(?:, ip=[\w.:]+)?)\) ?")
_LOG_HEADER = re.compile(
    r"^(?P<level>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL) "
    r"\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)? \[?[\w./<>-]+:\d+\] ?"
)
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:\([\w.]+\))?(?::\s|:$|$)")
_LEVEL_WORDS = frozenset({"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"})
_ERROR_WORD = re.compile(r"\bERROR\b")
_OTHER_ERROR = re.compile(r"^(?:Fatal Python error: |[\w .-]+: error: )")
_GENERIC = re.compile(
    r"root cause|Engine core initialization failed|EngineCore failed to start"
    r"|initialization failed due to an exception in a background process"
    r"|died unexpectedly|EngineDeadError|^(?:KeyboardInterrupt|SystemExit"
    r"|(?:asyncio\.(?:exceptions\.)?)?CancelledError)\b",
)


@dataclass(slots=True)
class _Line:
    index: int
    stream: str  # the process prefix, "" for unprefixed output
    level: str | None  # from a log header, if any
    text: str  # without prefix and header


@dataclass(slots=True)
class _Traceback:
    start: int  # index of the "Traceback" line
    end: int  # index of the exception line
    exception: list[str]  # the exception line and the message lines after it
    chained_to_previous: bool


def _lines(text: str) -> list[_Line]:
    out: list[_Line] = []
    for raw in re.split(r"\r\n|\r|\n", _ANSI.sub("", text)):
        stream = ""
        match = _PROCESS.match(raw)
        if match:
            stream = match["proc"]
            raw = raw[match.end() :]
        level = None
        header = _LOG_HEADER.match(raw)
        if header:
            level = header["level"]
            raw = raw[header.end() :]
        out.append(_Line(len(out), stream, level, raw.rstrip()))
    return out


def _tracebacks(lines: list[_Line]) -> list[_Traceback]:
    streams: dict[str, list[_Line]] = {}
    for line in lines:
        streams.setdefault(line.stream, []).append(line)
    found: list[_Traceback] = []
    for own in streams.values():
        after_previous: int | None = None  # position in ``own`` just after the last traceback
        i = 0
        while i < len(own):
            if own[i].text != _TRACEBACK:
                i += 1
                continue
            chained = after_previous is not None and any(
                own[k].text in _CHAINED for k in range(after_previous, i)
            )
            after_previous = None
            j = _exception_position(own, i + 1)
            if j is None:
                i += 1  # a traceback cut short: no exception line
                continue
            message = [own[j].text.strip()]
            k = j + 1
            while k < len(own) and len(message) < 12:
                text = own[k].text
                if text == _TRACEBACK or text in _CHAINED or own[k].level != own[j].level:
                    break
                message.append(text.strip())
                k += 1
            while message and not message[-1]:
                message.pop()
            found.append(_Traceback(own[i].index, own[j].index, message, chained))
            after_previous = k
            i = k
    found.sort(key=lambda tb: tb.end)
    return found


def _exception_position(own: list[_Line], start: int) -> int | None:
    """Where the exception line of the traceback whose frames start at ``start`` is."""
    for j in range(start, len(own)):
        line = own[j]
        if not line.text or line.text[0].isspace():
            continue  # a frame, its source line, carets, or a blank line
        if line.level is not None and line.level not in ("ERROR", "CRITICAL"):
            continue  # another thread's log line in the middle
        if line.text == _TRACEBACK:
            return None
        match = _EXCEPTION.match(line.text)
        if match is None or line.text.split(":", 1)[0] in _LEVEL_WORDS:
            return None  # the first unindented line is not an exception: output was cut
        return j
    return None


def _telling(exception: list[str]) -> str:
    line = exception[0]
    # pydantic says what failed on the lines after "1 validation error for ModelConfig"
    if re.search(r"\d+ validation errors? for \w+$", line) and len(exception) > 1:
        line = " ".join([line, *exception[1:3]])
    return line


def _shorten(line: str) -> str:
    line = " ".join(line.split())
    if len(line) <= MAX_LINE_CHARS:
        return line
    return line[: MAX_LINE_CHARS - 1].rstrip() + "…"


def diagnose(text: str) -> Diagnosis | None:
    """The most telling line in ``text`` (vLLM's output) and, when recognised, the cause.

    The telling line is the exception line of the last Python traceback, skipping wrappers that
    only point elsewhere (``Engine core initialization failed. See root cause above.``); else the
    last ``ERROR`` line (or ``Fatal Python error:`` / argparse ``error:``); else a line that names
    a known cause. The cause is looked for in that traceback and the ones chained to it (vLLM
    wraps a gated-repo error in "Invalid repository ID"); only when the telling line is a mere
    wrapper, or there is none, in the whole text. Returns ``None`` when vLLM printed nothing
    telling.
    """
    text = masker.mask(text)
    lines = _lines(text)
    tracebacks = _tracebacks(lines)
    in_traceback: set[int] = set()
    for tb in tracebacks:
        in_traceback.update(range(tb.start, tb.end + len(tb.exception)))

    chosen: _Traceback | None = None
    for tb in reversed(tracebacks):
        if not _GENERIC.search(tb.exception[0]):
            chosen = tb
            break

    line: str | None = None
    incident = ""
    specific = chosen is not None  # a line that says what failed, not where to look
    if chosen is not None:
        line = _telling(chosen.exception)
        chain = [chosen]
        position = tracebacks.index(chosen)
        while chain[-1].chained_to_previous and position > 0:
            position -= 1
            chain.append(tracebacks[position])
        incident = "\n".join("\n".join(tb.exception) for tb in chain)
    else:
        errors = [
            ln
            for ln in lines
            if ln.index not in in_traceback
            and ln.text.strip()
            and (
                ln.level in ("ERROR", "CRITICAL")
                or _ERROR_WORD.search(ln.text)
                or _OTHER_ERROR.match(ln.text)
            )
        ]
        telling = [ln for ln in errors if not _GENERIC.search(ln.text)]
        if telling:
            line = telling[-1].text.strip()
            specific = True
        elif tracebacks:
            line = _telling(tracebacks[-1].exception)
        elif errors:
            line = errors[-1].text.strip()
        incident = line or ""

    cause = classify(incident) if incident else None
    if cause is None and not specific:
        # Only wrappers, or nothing: a cause named elsewhere (a warning before a kill) is the
        # best clue. A specific error that is not recognised is left alone, not blamed on that.
        cause = classify("\n".join(ln.text for ln in lines))
        if cause is not None and line is None:
            hits = [ln for ln in lines if cause.pattern.search(ln.text)]
            line = hits[-1].text.strip() if hits else None
    if line is None:
        return None
    line = masker.mask(_shorten(line))
    if cause is None:
        return Diagnosis(line)
    return Diagnosis(line, cause.cause, cause.advice, cause.kind)


def misses_a_file(diagnosis: Diagnosis | None, offline: bool) -> bool:
    """Whether a vLLM launched with ``offline`` (``HF_HUB_OFFLINE=1``) stopped for a file that
    is not in the cache: then it must start once more with the hub reachable."""
    if not offline or diagnosis is None:
        return False
    return diagnosis.kind in OFFLINE_MISSES or bool(_OFFLINE_HINTS.search(diagnosis.line))
