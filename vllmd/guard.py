"""The API key on every door of vLLM, read live from ``credentials.json``.

Why this exists: vLLM's own ``--api-key`` check (``AuthenticationMiddleware`` in
``vllm/entrypoints/openai/server_utils.py``, formerly ``api_server.py``) guards only paths that
start with ``/v1``, ``/v2``, ``/inference`` or ``/cohere``. Measured on vLLM 0.32 started with
``--api-key``: ``POST /invocations`` and ``POST /pooling`` run the model, ``POST /tokenize``
answers, ``GET /metrics``, ``/version`` and ``/load`` answer, all without a key (issue 7). This
guard refuses every HTTP and websocket request that lacks ``Authorization: Bearer KEY``, except
``GET``/``HEAD /health`` (the probes') and CORS preflight ``OPTIONS``. Refusals are byte for byte
vLLM's own: status 401, ``{"error":"Unauthorized"}``, ``content-type: application/json``.

Why the key is read live: vLLM reads ``--api-key`` once at start, so rotating the key (deleting
``credentials.json``) costs a full model reload. The guard instead reads the file named by
``VLLMD_KEY_FILE`` and re-reads it whenever the file's identity (inode, size, mtime_ns) changes:
one ``stat`` per guarded request, microseconds. The daemon replaces the file atomically, so a new
key means a new inode. A missing, unreadable or invalid file refuses everything (fail closed); the
guard never raises, and it logs once per change of state, never the key.

It runs inside vLLM's process (``--middleware vllmd.guard.ApiKeyGuard``, which makes Starlette
call ``ApiKeyGuard(app)``), copied there as this single file: standard library only.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, Literal

__all__ = [
    "KEY_FILE_ENV",
    "MAX_KEY_FILE_BYTES",
    "ApiKeyGuard",
    "key_of",
    "parse_json",
    "parse_key",
    "read_at_most",
    "read_key_file",
]

# A fixed name rather than __name__: the daemon and vLLM's process must agree on it however the
# file was imported.
logger = logging.getLogger("vllmd.guard")

KEY_FILE_ENV: Final = "VLLMD_KEY_FILE"
"""The environment variable that names the key file (``PUBLIC/credentials.json``)."""

# ASGI's shapes, spelled as in starlette.types: the spec's messages are dicts of mixed values.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

StatFn = Callable[[str], os.stat_result]
"""Looks up a file's identity, like :func:`os.stat`."""
ClockNs = Callable[[], int]
"""Wall-clock time in nanoseconds, like :func:`time.time_ns` (the clock file times are on)."""

_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9]{22}")
MAX_KEY_FILE_BYTES: Final = 4_096
"""The largest key file accepted, by the guard and the daemon alike (a key file is ~30 bytes)."""
# A file changed this recently may change again with the same inode, size and mtime_ns (coarse
# file timestamps tick every few ms, some file systems every 1-2 s), so the guard re-reads it on
# every request until it has been still this long; git calls this the "racily clean" index entry.
_RACY_WINDOW_NS: Final = 2_000_000_000
_WEBSOCKET_POLICY_VIOLATION: Final = 1008

# vLLM answers with Starlette's JSONResponse({"error": "Unauthorized"}, status_code=401): compact
# JSON, then content-length before content-type, no charset for application/json.
_UNAUTHORIZED_BODY: Final = b'{"error":"Unauthorized"}'

_State = Literal["unset", "missing", "unreadable", "invalid", "ok"]
_Identity = tuple[int, int, int]


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), like Starlette's ``Headers.get``."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes) -> tuple[object, str]:
    """``data`` as a dependent's strict parser reads it: the document, or None and why not.

    Strict JSON (RFC 8259) in UTF-8 only, as JavaScript's ``JSON.parse`` and Python's ``json`` on
    text both take it: no byte-order mark (``json.loads`` of *bytes* would skip one, and guess
    UTF-16 too), no ``NaN`` or ``Infinity`` (``json`` alone takes those), no invalid UTF-8. A file
    either of them refuses would lock a dependent out while vLLM took its key. Never raises.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    if text.startswith("\ufeff"):
        return None, "not JSON: a byte-order mark first (strict JSON parsers refuse it)"
    try:
        return json.loads(text, parse_constant=_refuse_constant), ""
    except (ValueError, RecursionError):  # bad JSON; nesting deeper than Python's
        return None, "not JSON"


def key_of(document: object) -> tuple[str | None, str]:
    """The valid ``apiKey`` of a parsed JSON ``document``, or None and why not."""
    key = document.get("apiKey") if isinstance(document, dict) else None
    if not isinstance(key, str):
        return None, 'not a JSON object with an "apiKey" string'
    if _KEY_PATTERN.fullmatch(key) is None:
        return None, "$.apiKey is not 22 characters of [A-Za-z0-9]"
    return key, ""


def parse_key(data: bytes) -> tuple[str | None, str]:
    """The key in the key file's content ``data``, or None and why not.

    The daemon validates with this same function, so the guard and the daemon accept exactly the
    same files, and only files a dependent's strict JSON parser reads (:func:`parse_json`). The
    reason never quotes the content. Never raises.
    """
    if len(data) > MAX_KEY_FILE_BYTES:
        return None, f"larger than {MAX_KEY_FILE_BYTES} bytes"
    document, reason = parse_json(data)
    if reason:
        return None, reason
    return key_of(document)


def read_key_file(path: str) -> bytes:
    """At most ``MAX_KEY_FILE_BYTES + 1`` bytes of ``path``; OSError unless a regular file.

    Opened without blocking and checked to be a regular file before reading: a FIFO in the key
    file's place would otherwise block vLLM's event loop, and ``/dev/zero`` would never end.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return read_at_most(fd, MAX_KEY_FILE_BYTES)
    finally:
        os.close(fd)


def read_at_most(fd: int, limit: int) -> bytes:
    """What ``fd`` holds, up to ``limit + 1`` bytes: more than ``limit`` means "too large".

    The daemon's state-file reader (``vllmd.state.readfile``) caps files by the same rule; this
    copy is the guard's, which runs alone in vLLM's process.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class ApiKeyGuard:
    """Pure ASGI middleware: ``Authorization: Bearer KEY`` on every route but health and preflight.

    Args:
        app: The ASGI application to guard (Starlette passes it).
        key_file: The key file; None reads it from ``$VLLMD_KEY_FILE``, and when that is unset too
            every request is refused.
        stat: Looks up the key file's identity once per guarded request.
        clock_ns: Wall-clock nanoseconds, to tell a file that may still be changing.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        key_file: str | os.PathLike[str] | None = None,
        stat: StatFn = os.stat,
        clock_ns: ClockNs = time.time_ns,
    ) -> None:
        self.app = app
        if key_file is None:
            key_file = os.environ.get(KEY_FILE_ENV) or None
        self._path = None if key_file is None else os.fspath(key_file)
        self._stat = stat
        self._clock_ns = clock_ns
        self._identity: _Identity | None = None
        self._racy = False
        self._digest: bytes | None = None
        self._state: tuple[_State, str] = ("unset", "")
        if self._path is None:
            logger.error("%s is not set: the API key guard refuses every request", KEY_FILE_ENV)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope`` through the app when it is open or authorized; refuse it otherwise."""
        kind = scope["type"]
        if kind not in ("http", "websocket") or self._is_open(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
        elif kind == "http":
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-length", b"%d" % len(_UNAUTHORIZED_BODY)),
                        (b"content-type", b"application/json"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _UNAUTHORIZED_BODY})
        else:
            # Closing before accepting makes the server refuse the handshake (HTTP 403).
            await send({"type": "websocket.close", "code": _WEBSOCKET_POLICY_VIOLATION})

    @staticmethod
    def _is_open(scope: Scope) -> bool:
        """Whether ``scope`` needs no key: the health probe, or a CORS preflight."""
        if scope["type"] != "http":
            return False
        method = scope.get("method", "")
        if method == "OPTIONS":
            return _header(scope.get("headers", ()), b"access-control-request-method") is not None
        if method not in ("GET", "HEAD"):
            return False
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):  # as vLLM does, behind --root-path
            path = path[len(root_path) :]
        return path == "/health"

    def _authorized(self, scope: Scope) -> bool:
        """Whether ``scope`` carries the current key, compared in constant time."""
        expected = self._current_digest()
        if expected is None:
            return False
        value = _header(scope.get("headers", ()), b"authorization")
        if not value:
            return False
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        # Hashing first makes the comparison's length, and so its time, independent of the key.
        return hmac.compare_digest(hashlib.sha256(token).digest(), expected)

    def _current_digest(self) -> bytes | None:
        """The SHA-256 of the current key, re-read when the file changed; None refuses all."""
        path = self._path
        if path is None:
            return None
        try:
            try:
                info = self._stat(path)
            except FileNotFoundError:
                self._fail("missing", "")
                return None
            except OSError as exc:
                self._fail("unreadable", exc.strerror or type(exc).__name__)
                return None
            identity = (info.st_ino, info.st_size, info.st_mtime_ns)
            if identity != self._identity or self._racy:
                self._load(path, identity)
            return self._digest
        except Exception as exc:  # fail closed: a guard that raises would be a 500, not a 401
            self._fail("unreadable", type(exc).__name__)
            return None

    def _load(self, path: str, identity: _Identity) -> None:
        """Read the key file ``path``, whose identity is ``identity``, and record what it holds."""
        self._identity = identity
        self._racy = identity[2] >= self._clock_ns() - _RACY_WINDOW_NS
        try:
            data = read_key_file(path)
        except FileNotFoundError:
            self._fail("missing", "")
            return
        except OSError as exc:
            self._fail("unreadable", exc.strerror or type(exc).__name__)
            return
        key, reason = parse_key(data)
        if key is None:
            self._digest = None
            self._enter("invalid", reason)
            return
        digest = hashlib.sha256(key.encode("ascii")).digest()
        changed = self._digest is None or not hmac.compare_digest(digest, self._digest)
        self._digest = digest
        if self._state[0] != "ok" or changed:
            self._state = ("ok", "")
            logger.info("API key loaded from %s", path)

    def _fail(self, state: _State, reason: str) -> None:
        """Refuse everything until the file is back; retry on the next request."""
        # Forgetting the identity makes the next request read again: chmod fixes an unreadable
        # file without changing its inode, size or mtime.
        self._identity = None
        self._racy = False
        self._digest = None
        self._enter(state, reason)

    def _enter(self, state: _State, reason: str) -> None:
        """Log a failed state once, when it is entered (not once per request)."""
        if self._state == (state, reason):
            return
        self._state = (state, reason)
        if state == "missing":
            logger.warning(
                "API key file %s is missing: refusing every request until it is back", self._path
            )
        else:
            logger.error(
                "API key file %s is %s (%s): refusing every request until it is fixed",
                self._path,
                state,
                reason,
            )
