"""The real vLLM through a user's program (issue 14): the official ``openai`` client, ``--auth
guard``, a 60 s drain. One daemon, one chain.

Ready (with the drain and the quiet ``/health`` on vLLM's command line, the compile caches on the
data volume) → chat, streaming → a wrong key is an ``AuthenticationError`` → a stream open across a
key rotation finishes, then the old key is refused → the probe's ``/health`` requests are not in
vLLM's access log, the user's are → a stream in flight when the configuration changes completes
with its last token → a stream in flight when vllmd gets SIGTERM completes with its last token,
and nothing is left.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import pid_alive, wait_for

from e2e.conftest import (
    FIGURES,
    START_TIMEOUT_S,
    Real,
    client,
    stream_chat,
    tree_of,
)

CHAIN = True
pytestmark = pytest.mark.e2e
STEP_S = 150
LOAD_S = int(START_TIMEOUT_S) + 90
DRAIN_S = 60
"""Long enough for a stream of :data:`LONG` tokens on two busy cores; the drain ends earlier when
the stream does, so the tests do not wait it out."""
LONG = 96
"""Tokens in a stream that must outlive the stop's start (SmolLM2 made about 8 a second on two
busy cores, more when they are idle)."""
RENAMED = "smollm2-renamed"


@pytest.fixture(scope="module")
def real(real_factory: Any, cpu_env: Any) -> Real:
    store = {"serveArgs": list(cpu_env.chat_args)}
    return real_factory(  # type: ignore[no-any-return]
        "--auth", "guard", "--drain-timeout", str(DRAIN_S), store=store
    )


def _openai() -> Any:
    import openai

    return openai


def _stopping(real: Real, pid: int) -> bool:
    """Whether the daemon has sent vLLM ``pid`` its SIGTERM (it logs that right after)."""
    return f"stopping vLLM (pid {pid}) with SIGTERM" in real.daemon.stderr()


def _drains(real: Real) -> int:
    """How many times vLLM's engine said it was draining requests in flight at its SIGTERM."""
    return len(re.findall(r"draining in-flight requests count=[1-9]", real.daemon.output()))


@pytest.mark.timeout(LOAD_S)
def test_vllm_is_ready_with_a_drain_a_quiet_health_path_and_caches_on_the_data_volume(
    real: Real,
) -> None:
    ready = real.wait_ready(since=0)
    pid = real.vllm_pid()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[argv.index("--shutdown-timeout") + 1] == str(DRAIN_S)
    assert argv[argv.index("--disable-access-log-for-endpoints") + 1] == "/health"
    environ = dict(
        line.split("=", 1)
        for line in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        if "=" in line
    )
    cache = real.volumes.data / "cache"
    assert environ["VLLM_CACHE_ROOT"] == str(cache / "vllm")
    assert environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache / "inductor")
    assert environ["TRITON_CACHE_DIR"] == str(cache / "triton")
    FIGURES["openai chain: chat model ready"] = f"{ready['since'] - real.started:.1f} s"


@pytest.mark.timeout(STEP_S)
def test_the_openai_client_chats_and_the_answer_names_paris(real: Real) -> None:
    answer = client(real, real.key()).chat.completions.create(
        model=str(real.env.chat_model),
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=24,
    )
    assert "Paris" in (answer.choices[0].message.content or "")


@pytest.mark.timeout(STEP_S)
def test_the_openai_client_streams_a_chat_answer_token_by_token(real: Real) -> None:
    got = stream_chat(real, real.key(), 16)
    assert got.finish_reason == "length" and got.completion_tokens == 16
    assert got.chunks >= 16 and got.text.strip()


@pytest.mark.timeout(STEP_S)
def test_a_wrong_key_is_an_authentication_error(real: Real) -> None:
    openai = _openai()
    with pytest.raises(openai.AuthenticationError):
        client(real, "A" * 22).models.list()
    with pytest.raises(openai.AuthenticationError):
        stream_chat(real, "A" * 22, 4)


@pytest.mark.timeout(STEP_S)
def test_a_stream_open_across_a_key_rotation_finishes_and_the_old_key_is_refused(
    real: Real,
) -> None:
    openai = _openai()
    old_key, pid = real.key(), real.vllm_pid()
    rotated: list[str] = []

    def rotate() -> None:
        real.volumes.credentials.unlink()
        rotated.append(wait_for(lambda: _new_key(real, old_key), 2, "a new key"))

    got = stream_chat(real, old_key, LONG, on_first=rotate, mark=lambda: bool(rotated))
    assert got.finish_reason == "length" and got.completion_tokens == LONG
    assert got.after_mark > 0, "the stream ended before the key changed"
    with pytest.raises(openai.AuthenticationError):
        client(real, old_key).models.list()
    assert [m.id for m in client(real, rotated[0]).models.list()] == [str(real.env.chat_model)]
    assert real.starts() == [pid], "guard mode restarts nothing on a rotation"


@pytest.mark.timeout(STEP_S)
def test_the_probes_health_requests_stay_out_of_vllms_access_log(real: Real) -> None:
    # The probe asks /health every 2 s once ready: by now it has asked many times.
    ready_since = real.health()["since"]
    wait_for(lambda: time.time() - ready_since > 5, 10, "a few probes")
    output = real.daemon.stdout()
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in output  # users' requests are logged
    assert re.search(r'"GET /health[ ?]', output) is None


@pytest.mark.timeout(LOAD_S)
def test_a_stream_in_flight_when_the_configuration_changes_completes_with_its_last_token(
    real: Real,
) -> None:
    key, pid, drains = real.key(), real.vllm_pid(), _drains(real)
    written: list[float] = []

    def reconfigure() -> None:
        written.append(time.time())
        real.volumes.set_args(*real.env.chat_args, "--served-model-name", RENAMED)

    got = stream_chat(real, key, LONG, on_first=reconfigure, mark=lambda: _stopping(real, pid))
    assert got.finish_reason == "length" and got.completion_tokens == LONG
    assert got.after_mark > 0, "the stream ended before vLLM was asked to stop"
    wait_for(lambda: _drains(real) > drains, 10, "vLLM's word that it drains a request")
    ready = real.wait_ready(since=written[0])
    assert not pid_alive(pid) and len(real.starts()) == 2
    assert [m.id for m in client(real, key).models.list()] == [RENAMED]
    FIGURES["openai chain: reconfigure with a stream in flight to ready"] = (
        f"{ready['since'] - written[0]:.1f} s"
    )


@pytest.mark.timeout(STEP_S)
def test_a_stream_in_flight_when_vllmd_gets_sigterm_completes_with_its_last_token(
    real: Real,
) -> None:
    key, pid, drains = real.key(), real.vllm_pid(), _drains(real)
    sessions = set(real.starts())
    signalled: list[float] = []

    def sigterm() -> None:
        signalled.append(time.monotonic())
        real.daemon.signal(signal.SIGTERM)

    got = stream_chat(
        real, key, LONG, model=RENAMED, on_first=sigterm, mark=lambda: _stopping(real, pid)
    )
    assert got.finish_reason == "length" and got.completion_tokens == LONG
    assert got.after_mark > 0, "the stream ended before vLLM was asked to stop"
    assert real.daemon.wait_exit(timeout=DRAIN_S + 30) == 0
    wait_for(lambda: _drains(real) > drains, 10, "vLLM's word that it drains a request")
    FIGURES["openai chain: SIGTERM with a stream in flight to vllmd exit"] = (
        f"{time.monotonic() - signalled[0]:.1f} s"
    )
    assert tree_of(sessions) == []
    assert real.leaked_keys() == []


def _new_key(real: Real, old: str) -> str | None:
    try:
        key = real.key()
    except (OSError, ValueError, KeyError):
        return None
    return key if key != old else None
