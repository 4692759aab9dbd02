"""The key file: the daemon and its guard accept exactly the same files, and its faults heal.

Issue 11, classes 1 and 3: a key the daemon kept could be one its guard refused (no size cap in
the daemon, ``$`` before a final newline), a dangling symlink where the file should be made the
daemon give up, a FIFO froze it, and a mode that drifted stayed unreadable for dependents.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Volumes, wait_for
from vllmd.guard import ApiKeyGuard, Message, Scope
from vllmd.state.credentials import InvalidCredentials, ensure_key, read_key

FAST = settings(max_examples=int(os.environ.get("VLLMD_FUZZ_EXAMPLES", "300")), deadline=None)
VALID = "AbCdEfGhIjKlMnOpQrStUv"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One folder for every example of a property (hypothesis reruns the body, not fixtures)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


async def _inner(scope: Scope, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]


def guard_accepts(path: Path, token: str) -> bool:
    """Whether vLLM's guard, reading ``path``, lets a request with ``token`` through."""
    sent: list[Message] = []

    async def call() -> None:
        guard = ApiKeyGuard(_inner, key_file=path)  # type: ignore[arg-type]
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/models",
            "headers": [(b"authorization", f"Bearer {token}".encode("utf-8", "replace"))],
        }

        async def receive() -> Message:
            return {"type": "http.request"}

        async def send(message: Message) -> None:
            sent.append(message)

        await guard(scope, receive, send)

    anyio.run(call)
    return sent[0]["status"] == 200


def daemon_accepts(path: Path) -> str | None:
    """The key the daemon reads from ``path``, or None when it refuses the file."""
    try:
        return read_key(path)
    except InvalidCredentials:
        return None


def _candidate(data: bytes) -> str:
    """The token a client would try: the apiKey string if the content has one."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return VALID
    key = document.get("apiKey") if isinstance(document, dict) else None
    return key if isinstance(key, str) else VALID


_keys = st.one_of(
    st.just(VALID),
    st.text(alphabet="AbC019\n\r \x00é", min_size=20, max_size=24),
    st.builds(
        lambda k, tail: k + tail, st.just(VALID), st.sampled_from(["\n", "\r\n", " ", "=", ""])
    ),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_documents = st.builds(
    lambda key, extra, pad: json.dumps({"apiKey": key, **extra, "pad": "x" * pad}).encode(),
    _keys,
    st.dictionaries(st.text(max_size=8), _json, max_size=3),
    st.sampled_from([0, 10, 4000, 4060, 4100, 9000]),
)
_deep = st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n)
_corpus = st.one_of(
    st.binary(max_size=300), _documents, _deep, _json.map(lambda v: json.dumps(v).encode())
)


@FAST
@given(data=_corpus)
def test_the_daemon_and_its_guard_accept_exactly_the_same_key_files(
    scratch: Path, data: bytes
) -> None:
    # given: any content in the key file
    path = scratch / "credentials.json"
    path.write_bytes(data)
    # when: the daemon reads it, and the guard judges a request with the key it seems to hold
    kept = daemon_accepts(path)
    token = kept if kept is not None else _candidate(data)
    # then: the guard lets the request through exactly when the daemon keeps that key
    assert guard_accepts(path, token) == (kept is not None)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.symlink_to("nowhere.json"),
        lambda p: os.mkfifo(p),
        lambda p: p.symlink_to("/dev/zero"),
        lambda p: (p.with_name("loop").symlink_to(p.name), p.symlink_to("loop")),
        lambda p: p.write_bytes(
            b'{"apiKey": "' + VALID.encode() + b'", "x": "' + b"y" * 5000 + b'"}'
        ),
        lambda p: p.write_text(json.dumps({"apiKey": VALID + "\n"})),
    ],
    ids=["dangling-symlink", "fifo", "device", "symlink-loop", "too-large", "newline-after-key"],
)
def test_a_key_file_that_holds_no_usable_key_is_moved_aside_and_replaced(
    tmp_path: Path, make
) -> None:
    # given: something in the key file's place that gives no key the guard would accept
    path = tmp_path / "credentials.json"
    make(path)
    # when: the key is ensured (at start-up, on every wake-up, and by get-api-key)
    state = ensure_key(path)
    # then: a fresh key in a regular file, and what was there kept aside
    assert state.created and state.moved_aside is not None
    assert os.path.lexists(state.moved_aside)
    assert stat.S_ISREG(os.lstat(path).st_mode)
    assert guard_accepts(path, state.key)


def test_a_key_file_whose_mode_drifted_is_given_0644_back(tmp_path: Path) -> None:
    # given: a valid key file made unreadable for dependents
    path = tmp_path / "credentials.json"
    first = ensure_key(path).key
    path.chmod(0o600)
    # when: the key is ensured again
    state = ensure_key(path)
    # then: same key, readable by all again
    assert state.key == first and not state.created
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_the_daemon_replaces_a_dangling_key_symlink_and_restores_a_drifted_mode(
    volumes: Volumes, start_daemon
) -> None:
    # given: a running daemon
    daemon = start_daemon()
    key = volumes.key()
    # when: the key file becomes a dangling symlink
    # (swapped in with one rename: after a bare unlink the daemon may write a new key first)
    staged = volumes.public / ".staged-link"
    staged.symlink_to("gone.json")
    os.replace(staged, volumes.credentials)
    # then: a new key is written in a regular file
    wait_for(
        lambda: volumes.credentials.is_file() and not volumes.credentials.is_symlink(),
        5,
        "the dangling symlink replaced",
    )
    assert volumes.key() != key
    # when: its mode drifts
    volumes.credentials.chmod(0o600)
    # then: mode 0644 comes back (at the latest with the periodic rescan)
    wait_for(lambda: stat.S_IMODE(volumes.credentials.stat().st_mode) == 0o644, 10, "mode 0644")
    assert daemon.proc.poll() is None
