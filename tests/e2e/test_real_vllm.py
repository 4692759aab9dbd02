"""The product over the real engine (issue 6), in ``--auth flag`` mode: one daemon, one chain.

No model → Set Model with the local chat model → loading → ready → "Paris" with the key, 401
without → key rotation restarts vLLM with the new key while readers never see half a file →
reconfigure to the embedding model (one restart, 384 dimensions) → SIGTERM leaves nothing.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import pid_alive, wait_for

from e2e.conftest import (
    FIGURES,
    START_TIMEOUT_S,
    Real,
    ask_capital,
    client,
    embed,
    http,
    pss_bytes,
    set_model_custom,
    stream_chat,
    tree_of,
)

CHAIN = True
pytestmark = pytest.mark.e2e
STEP_S = 60
LOAD_S = int(START_TIMEOUT_S) + 60

KEY_PATTERN = re.compile(r"[A-Za-z0-9]{22}")


@pytest.fixture(scope="module")
def real(real_factory: Any) -> Real:
    # A long drain: the stream open across the key rotation finishes on two busy cores too.
    return real_factory("--auth", "flag", "--drain-timeout", "60")  # type: ignore[no-any-return]


@pytest.mark.timeout(STEP_S)
def test_without_a_model_vllmd_idles_and_asks_for_one(real: Real) -> None:
    health = real.daemon.wait_health("failure")
    assert health["message"] == 'No model selected. Run the "Set Model" action.'
    assert health["task"]["name"] == "Set Model"
    assert real.starts() == []


@pytest.mark.timeout(LOAD_S)
def test_set_model_with_custom_chat_args_loads_then_becomes_ready(real: Real) -> None:
    written = time.time()
    set_model_custom(real, real.env.chat_args)

    loading = real.daemon.wait_health("loading", timeout=15)
    assert loading["message"].startswith("The vLLM API is starting.")
    ready = real.wait_ready(since=written)

    assert ready["message"] == "The vLLM API is ready"
    assert ready["detail"]["model"] == str(real.env.chat_model)
    FIGURES["chat model: Set Model to ready"] = f"{ready['since'] - written:.1f} s"
    FIGURES["chat model: PSS of vLLM's tree"] = _gib(pss_bytes(tree_of({real.vllm_pid()})))


@pytest.mark.timeout(STEP_S)
def test_chat_with_the_key_answers_paris_and_without_it_401(real: Real) -> None:
    answer = ask_capital(real, real.key())
    assert answer.status == 200, answer.body
    assert "Paris" in answer.json()["choices"][0]["message"]["content"]

    refused = ask_capital(real, None)
    assert (refused.status, refused.json()) == (401, {"error": "Unauthorized"})


@dataclass
class Reader:
    """A dependent that reads ``credentials.json`` every millisecond and keeps what it saw."""

    path: Any
    reads: int = 0
    absent: int = 0
    torn: list[bytes] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                self.absent += 1
                continue
            finally:
                time.sleep(0.001)
            self.reads += 1
            try:
                key = json.loads(data)["apiKey"]
                assert KEY_PATTERN.fullmatch(key)
            except (ValueError, KeyError, TypeError, AssertionError):
                self.torn.append(data)
                continue
            if not self.keys or self.keys[-1] != key:
                self.keys.append(key)


@pytest.fixture
def reader(real: Real) -> Iterator[Reader]:
    reader = Reader(real.volumes.credentials)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    wait_for(lambda: reader.reads > 0, 5, "the first read")
    yield reader
    reader.stop.set()
    thread.join(5)


@pytest.mark.timeout(LOAD_S)
def test_deleting_the_key_restarts_vllm_with_a_new_one_and_readers_never_see_half_a_file(
    real: Real, reader: Reader
) -> None:
    import openai

    old_key, old_pid = real.key(), real.vllm_pid()
    rotated: list[tuple[float, str]] = []

    def rotate() -> None:  # with a user's stream in flight
        deleted = time.time()
        real.volumes.credentials.unlink()
        key = wait_for(lambda: (k := _key_or_none(real)) and k != old_key and k, 2, "a new key")
        rotated.append((deleted, key))

    stopping = f"stopping vLLM (pid {old_pid}) with SIGTERM"
    got = stream_chat(
        real, old_key, 48, on_first=rotate, mark=lambda: stopping in real.daemon.stderr()
    )
    # The old vLLM drained the stream it had accepted with the old key before it stopped.
    assert got.finish_reason == "length" and got.completion_tokens == 48
    assert got.after_mark > 0, "the stream ended before vLLM was asked to stop"
    deleted, new_key = rotated[0]
    wait_for(lambda: len(real.starts()) == 2, 90, "vLLM restarted with the new key")
    real.wait_ready(since=deleted)

    assert not pid_alive(old_pid)
    assert http(real.url("/v1/models"), key=old_key).status == 401
    with pytest.raises(openai.AuthenticationError):
        client(real, old_key).models.list()
    assert http(real.url("/v1/models"), key=new_key).status == 200
    assert "Paris" in ask_capital(real, new_key).json()["choices"][0]["message"]["content"]
    assert reader.torn == [], "a reader saw half a credentials.json"
    assert reader.keys == [old_key, new_key]
    assert reader.reads > 1_000
    FIGURES["flag mode: key rotation to ready again"] = f"{real.health()['since'] - deleted:.1f} s"


@pytest.mark.timeout(LOAD_S)
def test_reconfiguring_to_the_embedding_model_restarts_once_with_384_dimensions(
    real: Real,
) -> None:
    before = real.starts()
    written = time.time()
    set_model_custom(real, real.env.embed_args)
    ready = real.wait_ready(since=written)
    assert ready["detail"]["model"] == str(real.env.embed_model)
    FIGURES["embedding model: Set Model to ready (incl. stopping the chat model)"] = (
        f"{ready['since'] - written:.1f} s"
    )
    FIGURES["embedding model: PSS of vLLM's tree"] = _gib(pss_bytes(tree_of({real.vllm_pid()})))

    answer = embed(real, real.key())
    assert answer.status == 200, answer.body
    assert len(answer.json()["data"][0]["embedding"]) == 384
    # A second restart would have come within the cool-down after the first start (about a
    # second), long before this vLLM finished loading: by now the count is final.
    assert len(real.starts()) == len(before) + 1
    assert not pid_alive(before[-1])


@pytest.mark.timeout(STEP_S)
def test_sigterm_stops_vllm_and_exits_0_leaving_no_process_of_its_tree(real: Real) -> None:
    sessions = set(real.starts())
    tree = tree_of(sessions)
    assert len(tree) >= 3, f"expected vLLM, its engine and worker, found {tree}"

    signalled = time.monotonic()
    real.daemon.signal(signal.SIGTERM)
    assert real.daemon.wait_exit(timeout=45) == 0
    FIGURES["SIGTERM to vllmd exit (embedding model)"] = f"{time.monotonic() - signalled:.1f} s"

    assert tree_of(sessions) == []
    assert len(real.keys) == 2 and real.leaked_keys() == []
    assert [pid for pid in tree if pid_alive(pid)] == []
    assert "vllmd stopped" in real.daemon.stderr()


def _key_or_none(real: Real) -> str | None:
    try:
        return real.key()
    except (OSError, ValueError, KeyError):
        return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"
