"""The API key guard as an ASGI app: which doors it locks, and how it follows the key file."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import string
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

if importlib.util.find_spec("vllmd") is None:  # pragma: no cover - checkout not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vllmd.guard import KEY_FILE_ENV, ApiKeyGuard, Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio

ALPHABET = string.ascii_letters + string.digits
OK_START: Message = {"type": "http.response.start", "status": 200, "headers": []}
# What vLLM's own AuthenticationMiddleware sends: Starlette's
# JSONResponse(content={"error": "Unauthorized"}, status_code=401).
VLLM_401: list[Message] = [
    {
        "type": "http.response.start",
        "status": 401,
        "headers": [(b"content-length", b"24"), (b"content-type", b"application/json")],
    },
    {"type": "http.response.body", "body": b'{"error":"Unauthorized"}'},
]
GUARDED_PATHS = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/invocations"),
    ("POST", "/pooling"),
    ("POST", "/tokenize"),
    ("GET", "/metrics"),
    ("GET", "/version"),
    ("GET", "/load"),
    ("POST", "/pause"),
    ("GET", "/"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_key() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(22))


def write_key_file(path: Path, content: str | bytes) -> None:
    """Replace ``path`` atomically (a new inode), as the daemon does."""
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def credentials(key: str) -> str:
    return json.dumps({"apiKey": key}, indent=2) + "\n"


class InnerApp:
    """The guarded app: records each scope it serves and answers 200 (or accepts a websocket)."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send(dict(OK_START))
            await send({"type": "http.response.body", "body": b"ok"})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.accept"})


def http(
    method: str,
    path: str,
    *,
    key: str | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Scope:
    raw = list(headers)
    if key is not None:
        raw.append((b"authorization", b"Bearer " + key.encode()))
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": raw}


def websocket(path: str, *, key: str | None = None) -> Scope:
    raw = [] if key is None else [(b"authorization", b"Bearer " + key.encode())]
    return {"type": "websocket", "path": path, "root_path": "", "headers": raw}


async def call(guard: ApiKeyGuard, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:  # pragma: no cover - neither app reads the request
        raise AssertionError("receive() was called")

    async def send(message: Message) -> None:
        sent.append(message)

    await guard(scope, receive, send)
    return sent


def status(sent: list[Message]) -> int:
    status_code: int = sent[0]["status"]
    return status_code


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "credentials.json"
    write_key_file(path, credentials(key))
    return path


@pytest.fixture
def inner() -> InnerApp:
    return InnerApp()


@pytest.fixture
def guard(inner: InnerApp, key_file: Path) -> ApiKeyGuard:
    return ApiKeyGuard(inner, key_file=key_file)


# Which doors are locked


@pytest.mark.parametrize(("method", "path"), GUARDED_PATHS, ids=[p for _, p in GUARDED_PATHS])
async def test_route_without_key_is_refused_exactly_like_vllm(
    guard: ApiKeyGuard, inner: InnerApp, method: str, path: str
) -> None:
    sent = await call(guard, http(method, path))

    assert sent == VLLM_401
    assert inner.scopes == []


@pytest.mark.parametrize(("method", "path"), GUARDED_PATHS, ids=[p for _, p in GUARDED_PATHS])
async def test_route_with_key_is_served(
    guard: ApiKeyGuard, inner: InnerApp, key: str, method: str, path: str
) -> None:
    sent = await call(guard, http(method, path, key=key))

    assert status(sent) == 200
    assert len(inner.scopes) == 1


async def test_tokenize_without_key_is_refused(guard: ApiKeyGuard, inner: InnerApp) -> None:
    sent = await call(guard, http("POST", "/tokenize"))

    assert status(sent) == 401
    assert inner.scopes == []


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_health_probe_is_open_without_key(
    guard: ApiKeyGuard, inner: InnerApp, method: str
) -> None:
    sent = await call(guard, http(method, "/health"))

    assert status(sent) == 200
    assert len(inner.scopes) == 1


async def test_health_probe_behind_root_path_is_open(guard: ApiKeyGuard) -> None:
    scope = http("GET", "/api/health")
    scope["root_path"] = "/api"

    assert status(await call(guard, scope)) == 200


async def test_health_probe_is_open_even_without_key_file(inner: InnerApp, tmp_path: Path) -> None:
    guard = ApiKeyGuard(inner, key_file=tmp_path / "absent.json")

    assert status(await call(guard, http("GET", "/health"))) == 200


async def test_post_to_health_is_refused(guard: ApiKeyGuard, inner: InnerApp) -> None:
    sent = await call(guard, http("POST", "/health"))

    assert sent == VLLM_401
    assert inner.scopes == []


async def test_cors_preflight_is_open_without_key(guard: ApiKeyGuard, inner: InnerApp) -> None:
    preflight = http(
        "OPTIONS",
        "/v1/chat/completions",
        headers=((b"origin", b"http://x"), (b"access-control-request-method", b"POST")),
    )

    assert status(await call(guard, preflight)) == 200
    assert len(inner.scopes) == 1


async def test_options_without_preflight_header_is_refused(
    guard: ApiKeyGuard, inner: InnerApp
) -> None:
    sent = await call(guard, http("OPTIONS", "/v1/chat/completions"))

    assert sent == VLLM_401
    assert inner.scopes == []


# What counts as the key


async def test_request_without_authorization_header_is_refused(guard: ApiKeyGuard) -> None:
    assert status(await call(guard, http("GET", "/v1/models"))) == 401


@pytest.mark.parametrize(
    "value",
    [b"Basic {key}", b"{key}", b"Bearer", b"Bearer ", b"Bearer  {key}", b"Bearer {key} ", b""],
    ids=["basic", "no-scheme", "no-token", "empty-token", "two-spaces", "trailing-space", "empty"],
)
async def test_malformed_authorization_is_refused(
    guard: ApiKeyGuard, key: str, value: bytes
) -> None:
    header = value.replace(b"{key}", key.encode())
    scope = http("GET", "/v1/models", headers=((b"authorization", header),))

    assert status(await call(guard, scope)) == 401


async def test_wrong_key_is_refused(guard: ApiKeyGuard, key: str) -> None:
    wrong = key[:-1] + ("a" if key[-1] != "a" else "b")

    assert status(await call(guard, http("GET", "/v1/models", key=wrong))) == 401


async def test_bearer_scheme_is_case_insensitive_like_vllm(guard: ApiKeyGuard, key: str) -> None:
    scope = http("GET", "/v1/models", headers=((b"authorization", b"bearer " + key.encode()),))

    assert status(await call(guard, scope)) == 200


# Other scope types


async def test_websocket_without_key_is_closed_before_accept(
    guard: ApiKeyGuard, inner: InnerApp
) -> None:
    sent = await call(guard, websocket("/v1/realtime"))

    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.scopes == []


async def test_websocket_with_wrong_key_is_closed(guard: ApiKeyGuard, inner: InnerApp) -> None:
    sent = await call(guard, websocket("/v1/realtime", key=new_key()))

    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_websocket_with_key_is_served(guard: ApiKeyGuard, inner: InnerApp, key: str) -> None:
    sent = await call(guard, websocket("/v1/realtime", key=key))

    assert sent == [{"type": "websocket.accept"}]
    assert len(inner.scopes) == 1


async def test_websocket_to_health_still_needs_key(guard: ApiKeyGuard) -> None:
    sent = await call(guard, websocket("/health"))

    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_lifespan_passes_through_without_any_key(inner: InnerApp, tmp_path: Path) -> None:
    guard = ApiKeyGuard(inner, key_file=tmp_path / "absent.json")
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}

    await call(guard, scope)

    assert inner.scopes == [scope]


# Following the key file


async def test_rotated_key_replaces_old_key_without_restart(
    guard: ApiKeyGuard, key_file: Path, key: str
) -> None:
    assert status(await call(guard, http("POST", "/tokenize", key=key))) == 200
    rotated = new_key()

    write_key_file(key_file, credentials(rotated))

    assert status(await call(guard, http("POST", "/tokenize", key=key))) == 401
    assert status(await call(guard, http("POST", "/tokenize", key=rotated))) == 200


async def test_missing_key_file_refuses_everything(
    guard: ApiKeyGuard, key_file: Path, key: str
) -> None:
    key_file.unlink()

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401


async def test_recreated_key_file_works_again(guard: ApiKeyGuard, key_file: Path, key: str) -> None:
    key_file.unlink()
    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401
    fresh = new_key()

    write_key_file(key_file, credentials(fresh))

    assert status(await call(guard, http("GET", "/v1/models", key=fresh))) == 200
    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401


INVALID_CONTENTS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not-json", b"{apiKey: nope"),
    ("not-utf8", b'{"apiKey": "\xff\xfe"}'),
    ("list", b'["aaaaaaaaaaaaaaaaaaaaaa"]'),
    ("no-apiKey", b'{"key": "aaaaaaaaaaaaaaaaaaaaaa"}'),
    ("apiKey-not-string", b'{"apiKey": 1234567890123456789012}'),
    ("too-short", b'{"apiKey": "aaaaaaaaaaaaaaaaaaaaa"}'),
    ("too-long", b'{"apiKey": "aaaaaaaaaaaaaaaaaaaaaaa"}'),
    ("bad-alphabet", b'{"apiKey": "aaaaaaaaaaaaaaaaaaaaa-"}'),
    ("trailing-newline", b'{"apiKey": "aaaaaaaaaaaaaaaaaaaaaa\\n"}'),
    ("huge", b'{"apiKey": "aaaaaaaaaaaaaaaaaaaaaa", "pad": "' + b"x" * 5_000 + b'"}'),
]


@pytest.mark.parametrize(
    "content", [c for _, c in INVALID_CONTENTS], ids=[n for n, _ in INVALID_CONTENTS]
)
async def test_invalid_key_file_refuses_everything(
    guard: ApiKeyGuard, key_file: Path, content: bytes
) -> None:
    write_key_file(key_file, content)

    for candidate in ("aaaaaaaaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaaaaaaa", ""):
        assert status(await call(guard, http("GET", "/v1/models", key=candidate))) == 401


async def test_unknown_fields_in_key_file_are_tolerated(
    guard: ApiKeyGuard, key_file: Path, key: str
) -> None:
    write_key_file(key_file, json.dumps({"apiKey": key, "note": "written by a newer vllmd"}))

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 200


async def test_invalid_key_file_fixed_works_again(
    guard: ApiKeyGuard, key_file: Path, key: str
) -> None:
    write_key_file(key_file, b"garbage")
    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401

    write_key_file(key_file, credentials(key))

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 200


async def test_unreadable_key_file_refuses_without_raising(
    inner: InnerApp, tmp_path: Path, key: str
) -> None:
    # A folder where the file should be: stat succeeds, open fails (IsADirectoryError).
    folder = tmp_path / "credentials.json"
    folder.mkdir()
    guard = ApiKeyGuard(inner, key_file=folder)

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401


async def test_failing_stat_refuses_without_raising(
    inner: InnerApp, key_file: Path, key: str
) -> None:
    def denied(path: str) -> os.stat_result:
        raise PermissionError(13, "Permission denied", path)

    guard = ApiKeyGuard(inner, key_file=key_file, stat=denied)

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401


async def test_unexpected_error_in_stat_refuses_without_raising(
    inner: InnerApp, key_file: Path, key: str
) -> None:
    def broken(path: str) -> os.stat_result:
        raise RuntimeError("bug")

    guard = ApiKeyGuard(inner, key_file=key_file, stat=broken)

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401


async def test_key_file_becoming_readable_works_without_identity_change(
    inner: InnerApp, key_file: Path, key: str
) -> None:
    # chmod fixes a file without changing its inode, size or mtime: a failed read is retried.
    outcomes: list[Exception | None] = [PermissionError(13, "Permission denied"), None]

    def flaky(path: str) -> os.stat_result:
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            raise outcome
        return os.stat(path)

    guard = ApiKeyGuard(inner, key_file=key_file, stat=flaky)
    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 200


async def test_one_stat_per_guarded_request_and_none_for_open_routes(
    inner: InnerApp, key_file: Path, key: str
) -> None:
    calls: list[str] = []

    def counting(path: str) -> os.stat_result:
        calls.append(path)
        return os.stat(path)

    guard = ApiKeyGuard(inner, key_file=key_file, stat=counting)

    for _ in range(3):
        await call(guard, http("POST", "/tokenize", key=key))
    await call(guard, http("GET", "/health"))
    await call(guard, {"type": "lifespan"})

    assert calls == [str(key_file)] * 3


def frozen_stat(path: Path) -> tuple[Callable[[str], os.stat_result], int]:
    """A stat that keeps answering the file's identity as it is now, and that mtime_ns."""
    frozen = os.stat(path)
    return (lambda _: frozen), frozen.st_mtime_ns


async def test_settled_key_file_is_not_read_again_while_its_identity_holds(
    inner: InnerApp, key_file: Path, key: str
) -> None:
    stat, mtime_ns = frozen_stat(key_file)
    guard = ApiKeyGuard(inner, key_file=key_file, stat=stat, clock_ns=lambda: mtime_ns + 10**10)
    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 200
    other = new_key()

    key_file.write_text(credentials(other))  # same identity, as far as the guard can see

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 200
    assert status(await call(guard, http("GET", "/v1/models", key=other))) == 401


async def test_freshly_written_key_file_is_read_again_despite_same_identity(
    inner: InnerApp, key_file: Path, key: str
) -> None:
    # Coarse file timestamps let a rewrite within one tick keep inode, size and mtime_ns.
    stat, mtime_ns = frozen_stat(key_file)
    guard = ApiKeyGuard(inner, key_file=key_file, stat=stat, clock_ns=lambda: mtime_ns)
    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 200
    other = new_key()

    key_file.write_text(credentials(other))

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401
    assert status(await call(guard, http("GET", "/v1/models", key=other))) == 200


# Without keyword arguments, as vLLM builds it


async def test_key_file_is_taken_from_environment(
    inner: InnerApp, key_file: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    guard = ApiKeyGuard(inner)

    assert status(await call(guard, http("GET", "/v1/models", key=key))) == 200
    assert status(await call(guard, http("GET", "/v1/models"))) == 401


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
async def test_unset_environment_refuses_everything_and_says_so_once(
    inner: InnerApp,
    key: str,
    value: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if value is None:
        monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_FILE_ENV, value)
    caplog.set_level(logging.INFO, logger="vllmd.guard")

    guard = ApiKeyGuard(inner)
    for _ in range(3):
        assert status(await call(guard, http("GET", "/v1/models", key=key))) == 401

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, f"{KEY_FILE_ENV} is not set: the API key guard refuses every request")
    ]


# Logging


async def test_failures_are_logged_once_per_change_of_state(
    guard: ApiKeyGuard, key_file: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vllmd.guard")
    scope = http("GET", "/v1/models", key=key)

    await call(guard, scope)
    key_file.unlink()
    for _ in range(5):
        await call(guard, scope)
    write_key_file(key_file, b"garbage")
    for _ in range(5):
        await call(guard, scope)
    write_key_file(key_file, credentials(key))
    for _ in range(5):
        await call(guard, scope)

    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.INFO, logging.WARNING, logging.ERROR, logging.INFO]
    assert "missing" in caplog.records[1].getMessage()
    assert "not JSON" in caplog.records[2].getMessage()


async def test_key_never_appears_in_logs(
    guard: ApiKeyGuard, key_file: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rotated = new_key()
    almost = "a" * 21 + "-"

    for content in (
        credentials(rotated),
        json.dumps({"apiKey": almost}),
        json.dumps({"apiKey": key + "x"}),
        '{"apiKey": "' + key,
        credentials(key),
    ):
        write_key_file(key_file, content)
        for candidate in (key, rotated):
            await call(guard, http("GET", "/v1/models", key=candidate))
    key_file.unlink()
    await call(guard, http("GET", "/v1/models", key=key))

    assert len(caplog.records) >= 5
    for secret in (key, rotated, almost):
        assert secret not in caplog.text
        assert all(secret not in repr(r.args) for r in caplog.records)


def test_guard_module_imports_only_the_standard_library() -> None:
    import ast

    import vllmd.guard

    tree = ast.parse(Path(vllmd.guard.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])

    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
