"""The key on every door of the real vLLM (issue 7), with ``--auth guard``: one daemon, one chain.

The embedding model makes ``/invocations`` and ``/pooling`` run the model. Without the guard
these answered 200 without any key on vLLM 0.32; with it every route but ``GET /health`` wants the
key, and a new key takes effect within a second without restarting vLLM.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import pid_alive, wait_for

from e2e.conftest import FIGURES, START_TIMEOUT_S, Answer, Real, client, http, tree_of

CHAIN = True
pytestmark = pytest.mark.e2e
STEP_S = 60
LOAD_S = int(START_TIMEOUT_S) + 60
UNAUTHORIZED = (401, {"error": "Unauthorized"})


@pytest.fixture(scope="module")
def real(real_factory: Any, cpu_env: Any) -> Real:
    store = {"serveArgs": list(cpu_env.embed_args)}
    return real_factory("--auth", "guard", store=store)  # type: ignore[no-any-return]


def routes(real: Real) -> dict[str, tuple[str, Any]]:
    """Every door worth trying: path → (method, body). The model runs behind the POSTs."""
    model = str(real.env.embed_model)
    text = {"model": model, "input": "the key on every door"}
    return {
        "/v1/models": ("GET", None),
        "/v1/embeddings": ("POST", text),
        "/invocations": ("POST", text),
        "/pooling": ("POST", text),
        "/tokenize": ("POST", {"model": model, "prompt": "the key on every door"}),
        "/metrics": ("GET", None),
        "/version": ("GET", None),
    }


def call(real: Real, path: str, key: str | None) -> Answer:
    method, body = routes(real)[path]
    return http(real.url(path), key=key, body=body, method=method)


@pytest.mark.timeout(LOAD_S)
def test_vllm_becomes_ready_with_the_guard_and_without_the_key_on_its_command_line(
    real: Real,
) -> None:
    ready = real.wait_ready(since=0)
    assert ready["detail"]["model"] == str(real.env.embed_model)
    cmdline = Path(f"/proc/{real.vllm_pid()}/cmdline").read_bytes().split(b"\0")
    assert b"vllmd.guard.ApiKeyGuard" in cmdline
    assert b"--api-key" not in cmdline
    assert real.key().encode() not in b" ".join(cmdline)


@pytest.mark.timeout(STEP_S)
def test_every_route_refuses_a_request_without_the_key_or_with_a_wrong_one(real: Real) -> None:
    wrong = "A" * 22
    seen = {
        path: [(a.status, a.json()) for a in (call(real, path, None), call(real, path, wrong))]
        for path in routes(real)
    }
    assert seen == {path: [UNAUTHORIZED, UNAUTHORIZED] for path in routes(real)}


@pytest.mark.timeout(STEP_S)
def test_every_route_works_with_the_key(real: Real) -> None:
    key = real.key()
    answers = {path: call(real, path, key) for path in routes(real)}
    assert {path: a.status for path, a in answers.items()} == dict.fromkeys(routes(real), 200)
    assert len(answers["/v1/embeddings"].json()["data"][0]["embedding"]) == 384
    assert b"vllm:" in answers["/metrics"].body
    assert answers["/tokenize"].json()["count"] > 0


@pytest.mark.timeout(STEP_S)
def test_the_openai_client_embeds_with_the_key_and_a_wrong_key_is_an_authentication_error(
    real: Real,
) -> None:
    import openai

    model = str(real.env.embed_model)
    texts = ["vllmd supervises vLLM", "the key on every door"]
    result = client(real, real.key()).embeddings.create(model=model, input=texts)
    assert [len(item.embedding) for item in result.data] == [384, 384]
    with pytest.raises(openai.AuthenticationError):
        client(real, "A" * 22).embeddings.create(model=model, input=texts)


@pytest.mark.timeout(STEP_S)
def test_health_is_open_to_the_probes(real: Real) -> None:
    assert http(real.url("/health")).status == 200
    # HEAD passes the guard too; vLLM's route itself answers GET only.
    assert http(real.url("/health"), method="HEAD").status == 405


@pytest.mark.timeout(STEP_S)
def test_deleting_the_key_switches_keys_within_a_second_without_restarting_vllm(
    real: Real,
) -> None:
    old_key, pid = real.key(), real.vllm_pid()

    deleted = time.monotonic()
    real.volumes.credentials.unlink()

    def switched() -> str | None:
        try:
            new_key = real.key()
        except (OSError, ValueError, KeyError):
            return None
        if new_key == old_key or call(real, "/v1/models", new_key).status != 200:
            return None
        return new_key

    new_key = wait_for(switched, 1.0, "the new key to work", interval=0.005)
    switched_s = time.monotonic() - deleted
    assert call(real, "/v1/models", old_key).status == 401
    assert call(real, "/v1/embeddings", new_key).status == 200
    assert real.starts() == [pid] and pid_alive(pid), "vLLM was restarted"
    assert real.health()["result"] == "success"
    FIGURES["guard mode: credentials.json deleted to new key working"] = f"{switched_s:.3f} s"


@pytest.mark.timeout(STEP_S)
def test_sigterm_stops_vllm_and_exits_0_leaving_no_process_of_its_tree(real: Real) -> None:
    sessions = set(real.starts())
    tree = tree_of(sessions)
    assert len(tree) >= 3, f"expected vLLM, its engine and worker, found {tree}"

    real.daemon.signal(signal.SIGTERM)
    assert real.daemon.wait_exit(timeout=45) == 0

    assert tree_of(sessions) == []
    assert len(real.keys) == 2 and real.leaked_keys() == []
    assert [p for p in tree if pid_alive(p)] == []
