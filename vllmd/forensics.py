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

from vllmd.health import Diagnosis
from vllmd.masking import masker

__all__ = ["TAIL_BYTES", "Diagnosis", "OutputTail", "diagnose"]

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


# ----------------------------------------------------------------------------------------------
# Causes


@dataclass(frozen=True, slots=True)
class _Cause:
    kind: str
    pattern: re.Pattern[str]
    cause: str
    advice: str


_SMALLER = "Pick a smaller preset in Set Model, or lower --gpu-memory-utilization."
_HF_TOKEN = "--env HF_TOKEN=<your token>"

# Order matters: the first cause whose pattern matches wins.
_CAUSES = (
    _Cause(
        "gpu-memory-in-use",
        re.compile(r"Free memory on device .* is less than desired GPU memory utilization"),
        "There was not enough free GPU memory when vLLM started (other programs use the GPU, "
        "or the share asked for is too high).",
        "Stop other programs that use the GPU, or pick a smaller preset in Set Model, or lower "
        "--gpu-memory-utilization.",
    ),
    _Cause(
        "context-too-long",
        re.compile(
            r"No available memory for the cache blocks|KV cache is needed, which is larger than"
            r"|larger than the available KV cache memory|greater than the derived max_model_len"
        ),
        "The model loaded, but there is not enough memory left for its context length "
        "(the KV cache).",
        "Pick a preset with a shorter context, or set a lower --max-model-len in Set Model.",
    ),
    _Cause(
        "out-of-memory",
        re.compile(
            r"(?:CUDA|HIP) out of memory|OutOfMemoryError|(?:CUDA|HIP)(?: driver)? error: "
            r"out of memory|hipErrorOutOfMemory|cudaErrorMemoryAllocation",
        ),
        "The GPU ran out of memory.",
        _SMALLER,
    ),
    _Cause(
        "out-of-memory",
        re.compile(r"DefaultCPUAllocator: can't allocate memory|\[Errno 12\] Cannot allocate"),
        "The system ran out of memory.",
        "Pick a smaller preset in Set Model.",
    ),
    _Cause(
        "disk-full",
        re.compile(r"No space left on device|\[Errno 28\]|Not enough free disk space"),
        "The disk is full.",
        'Run the "Delete Model Cache" action to remove models you no longer use, or free space '
        "on the data volume.",
    ),
    _Cause(
        "hf-forbidden",
        re.compile(
            r"403 Client Error|403 Forbidden|not in the authorized list|awaiting a review",
        ),
        "HuggingFace refused access to this gated model for the token given (403).",
        "Request access on the model's page at huggingface.co and wait for approval; make sure "
        f"the token in Set Model ({_HF_TOKEN}) belongs to that account and may read gated repos.",
    ),
    _Cause(
        "hf-gated",
        re.compile(
            r"GatedRepoError|Cannot access gated repo|trying to access a gated repo"
            r"|Access to model \S+ is restricted"
        ),
        "This model is gated on HuggingFace: downloading it needs an access token (401).",
        "Accept the model's terms on its page at huggingface.co, then run Set Model again with "
        f"{_HF_TOKEN}.",
    ),
    _Cause(
        "model-not-found",
        re.compile(
            r"RepositoryNotFoundError|Repository Not Found|RevisionNotFoundError"
            r"|404 Client Error|Invalid repository ID or local directory specified"
            r"|is not a local folder and is not a valid model identifier"
        ),
        "HuggingFace does not know this model id (or the model is private).",
        "Check the model id in Set Model: ORG/NAME exactly as on huggingface.co. If the model "
        f"is private or gated, add {_HF_TOKEN}.",
    ),
    _Cause(
        "hf-unauthorized",
        re.compile(r"401 Client Error|Unauthorized for url|Invalid username or password"),
        "HuggingFace refused the download: it needs a valid access token (401).",
        f"Run Set Model again with {_HF_TOKEN} (a read token from huggingface.co).",
    ),
    _Cause(
        "network",
        re.compile(
            r"couldn't connect to 'https://huggingface\.co'|Failed to resolve 'huggingface\.co'"
            r"|Temporary failure in name resolution|Max retries exceeded with url"
            r"|LocalEntryNotFoundError|Network is unreachable"
        ),
        "vLLM could not reach huggingface.co to download the model.",
        "Check the server's internet connection; the download continues when vLLM restarts.",
    ),
    _Cause(
        "gpu-unsupported",
        re.compile(
            r"compute capability|Minimum capability: \d+|no kernel image is available"
            r"|not compatible with the current PyTorch installation"
            r"|only supports Ampere GPUs or newer|not supported on this GPU",
        ),
        "This GPU does not support what the chosen model needs (its compute capability is too "
        "old, or too new for this build).",
        "Pick a preset made for your GPU tier in Set Model (vllmd hardware shows the tier).",
    ),
    _Cause(
        "no-gpu",
        re.compile(
            r"No CUDA GPUs are available|No HIP GPUs are available|Found no NVIDIA driver"
            r"|Failed to infer device type|CUDA driver initialization failed"
        ),
        "vLLM found no usable GPU.",
        "Check that the GPU is passed through to this service (StartOS GPU settings and "
        "driver), or use the CPU image.",
    ),
    _Cause(
        "bad-arguments",
        re.compile(
            r"^(?:vllm(?: serve)?|api_server\.py): error: "
            r"|ValidationError: \d+ validation errors? for \w+",
            re.MULTILINE,
        ),
        "vLLM did not accept its arguments.",
        "Fix the custom arguments in Set Model (see vllm serve --help).",
    ),
)


def _classify(text: str) -> _Cause | None:
    for cause in _CAUSES:
        if cause.pattern.search(text):
            return cause
    return None


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

    cause = _classify(incident) if incident else None
    if cause is None and not specific:
        # Only wrappers, or nothing: a cause named elsewhere (a warning before a kill) is the
        # best clue. A specific error that is not recognised is left alone, not blamed on that.
        cause = _classify("\n".join(ln.text for ln in lines))
        if cause is not None and line is None:
            hits = [ln for ln in lines if cause.pattern.search(ln.text)]
            line = hits[-1].text.strip() if hits else None
    if line is None:
        return None
    line = masker.mask(_shorten(line))
    if cause is None:
        return Diagnosis(line)
    return Diagnosis(line, cause.cause, cause.advice, cause.kind)
