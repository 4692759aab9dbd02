"""The stand-in `vllm` program behaves as vllmd's other tests and the benchmark rely on.

The stand-in (`tests/standin/vllm`) imitates `vllm serve`: it binds at once, listens after its
"loading" delay, answers `/health` and the key-guarded `/v1` routes, exits 0 on SIGTERM, and
misbehaves on request through its `--fake-*` switches. These tests run it as a real process.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

STANDIN = Path(__file__).parent / "standin" / "vllm"
KEY = "k" * 22

Spawn = Callable[..., subprocess.Popen[bytes]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """Poll `condition` until it returns something truthy, failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.01)


def request(
    port: int,
    path: str,
    *,
    key: str | None = None,
    method: str = "GET",
    body: bytes | None = None,
    timeout_s: float = 2.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def health(port: int) -> int | None:
    """The `/health` status, or None while the port refuses connections."""
    try:
        return request(port, "/health")[0]
    except ConnectionRefusedError:
        return None


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def event(path: Path, name: str) -> dict[str, Any] | None:
    return next((r for r in records(path) if r.get("event") == name), None)


def alive(pid: int) -> bool:
    """True while `pid` runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def port_is_bound(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start the stand-in in its own session; every process group is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str,
        port: int | None = None,
        model: str | None = "org/model",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        argv = [str(STANDIN), "serve", *([model] if model else []), *args]
        if port is not None:
            argv += ["--no-enable-log-requests", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=5)


def test_port_refuses_connections_until_the_listen_delay_passes(
    spawn: Spawn, tmp_path: Path
) -> None:
    # given
    port, rec = free_port(), tmp_path / "rec.jsonl"
    # when
    spawn("--fake-listen-delay", "0.4", "--fake-record", str(rec), port=port)
    # then: bound but refusing, then healthy
    wait_until(lambda: port_is_bound(port))
    assert health(port) is None
    assert wait_until(lambda: health(port)) == 200
    start, listening = records(rec)[0], event(rec, "listening")
    assert listening is not None
    assert listening["t_mono"] - start["t_mono"] >= 0.4


def test_uvicorns_startup_complete_line_comes_on_stderr_as_it_starts_listening(
    spawn: Spawn,
) -> None:
    # given a stand-in that loads for a moment; when it starts listening
    port = free_port()
    proc = spawn("--fake-listen-delay", "0.2", port=port)
    wait_until(lambda: health(port))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    # then it said so the way uvicorn does under vLLM 0.32, on stderr
    assert b"INFO:     Application startup complete.\n" in err
    assert b"Application startup complete." not in out


def test_v1_routes_require_the_api_key(spawn: Spawn) -> None:
    # given
    port = free_port()
    spawn("--api-key", KEY, port=port)
    wait_until(lambda: health(port))
    # when / then
    status, body = request(port, "/v1/models")
    assert (status, json.loads(body)) == (401, {"error": "Unauthorized"})
    assert request(port, "/v1/models", key="wrong")[0] == 401
    status, body = request(port, "/v1/models", key=KEY)
    assert status == 200
    assert json.loads(body)["data"][0]["id"] == "org/model"
    chat = json.dumps({"model": "org/model", "messages": [{"role": "user", "content": "hi"}]})
    assert request(port, "/v1/chat/completions", method="POST", body=chat.encode())[0] == 401
    status, body = request(port, "/v1/chat/completions", key=KEY, method="POST", body=chat.encode())
    assert status == 200
    answer = json.loads(body)
    assert answer["model"] == "org/model"
    assert answer["choices"][0]["message"]["role"] == "assistant"


def test_lenient_argv_takes_model_flag_and_skips_unknown_flags(spawn: Spawn) -> None:
    # given: unknown flags with and without values, in both spellings
    port = free_port()
    spawn(
        "--max-model-len=4096",
        "--dtype",
        "auto",
        "--enforce-eager",
        "-tp",
        "2",
        "--model",
        "org/other",
        "--api-key=" + KEY,
        model=None,
        port=port,
    )
    # when
    wait_until(lambda: health(port))
    status, body = request(port, "/v1/models", key=KEY)
    # then
    assert status == 200
    assert json.loads(body)["data"][0]["id"] == "org/other"


def test_argv_without_serve_is_a_usage_error() -> None:
    result = subprocess.run([str(STANDIN), "run", "m"], capture_output=True, timeout=10)
    assert result.returncode == 2
    assert b"serve" in result.stderr


def test_crash_exits_with_the_given_code_after_replaying_stderr(
    spawn: Spawn, tmp_path: Path
) -> None:
    # given
    replay = tmp_path / "err.txt"
    replay.write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    # when
    crash_now = ("--fake-crash-after", "0", "--fake-exit-code", "3")
    immediate = spawn(*crash_now, "--fake-stderr-file", str(replay))
    later = spawn("--fake-crash-after", "0.2", "--fake-exit-code", "7", port=free_port())
    # then
    _, err = immediate.communicate(timeout=10)
    assert immediate.returncode == 3
    assert err.decode().endswith("RuntimeError: CUDA out of memory\n")
    later.communicate(timeout=10)
    assert later.returncode == 7


def test_record_file_holds_identity_argv_env_and_events(spawn: Spawn, tmp_path: Path) -> None:
    # given
    port, rec = free_port(), tmp_path / "rec.jsonl"
    proc = spawn("--fake-record", str(rec), port=port, env={"STANDIN_MARK": "yes"})
    wait_until(lambda: event(rec, "listening"))
    # when
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    # then
    start, *events = records(rec)
    assert start["pid"] == proc.pid
    assert start["pgid"] == start["sid"] == proc.pid  # start_new_session
    assert start["argv"][:3] == [str(STANDIN), "serve", "org/model"]
    assert start["argv"][-2:] == ["--port", str(port)]
    assert start["env"]["STANDIN_MARK"] == "yes"
    assert start["grandchild_pid"] is None
    assert isinstance(start["t_wall"], float)
    assert [e["event"] for e in events] == ["listening", "sigterm", "exit"]
    assert start["t_mono"] <= events[0]["t_mono"] <= events[1]["t_mono"]


def test_sigterm_exits_zero_after_the_term_delay(spawn: Spawn, tmp_path: Path) -> None:
    # given
    port, rec = free_port(), tmp_path / "rec.jsonl"
    prompt = spawn(port=port)
    slow = spawn("--fake-term-delay", "0.3", "--fake-record", str(rec), port=free_port())
    wait_until(lambda: health(port) and event(rec, "listening"))
    # when
    prompt.send_signal(signal.SIGTERM)
    slow.send_signal(signal.SIGTERM)
    # then
    prompt.communicate(timeout=10)
    slow.communicate(timeout=10)
    assert (prompt.returncode, slow.returncode) == (0, 0)
    sigterm, exited = event(rec, "sigterm"), event(rec, "exit")
    assert sigterm is not None and exited is not None
    assert exited["t_mono"] - sigterm["t_mono"] >= 0.3


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


def test_sigterm_right_after_listen_is_not_lost(spawn: Spawn) -> None:
    # A SIGTERM that arrived just before the main thread went to sleep once waited for ever.
    for _ in range(5):
        # given
        port = free_port()
        proc = spawn(port=port)
        wait_until(lambda port=port: connectable(port), timeout_s=5)
        # when
        proc.send_signal(signal.SIGTERM)
        # then
        proc.communicate(timeout=5)
        assert proc.returncode == 0


def test_ignored_sigterm_needs_sigkill(spawn: Spawn, tmp_path: Path) -> None:
    # given
    rec = tmp_path / "rec.jsonl"
    proc = spawn("--fake-ignore-sigterm", "--fake-record", str(rec), port=free_port())
    wait_until(lambda: event(rec, "listening"))
    # when
    proc.send_signal(signal.SIGTERM)
    # then
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_grandchild_shares_the_group_and_stops_with_sigterm(spawn: Spawn, tmp_path: Path) -> None:
    # given
    rec = tmp_path / "rec.jsonl"
    proc = spawn("--fake-grandchild", "--fake-record", str(rec), port=free_port())
    wait_until(lambda: event(rec, "listening"))
    grandchild = next(r["grandchild_pid"] for r in records(rec) if r["grandchild_pid"])
    # then
    assert os.getpgid(grandchild) == proc.pid
    # when
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    # then
    assert proc.returncode == 0
    wait_until(lambda: not alive(grandchild))


@pytest.mark.parametrize(
    "flag", ["--fake-orphan-grandchild", "--fake-grandchild-ignores-term"], ids=["orphan", "deaf"]
)
def test_grandchild_can_outlive_the_main_process(spawn: Spawn, tmp_path: Path, flag: str) -> None:
    # given
    rec = tmp_path / "rec.jsonl"
    proc = spawn("--fake-grandchild", flag, "--fake-record", str(rec), port=free_port())
    wait_until(lambda: event(rec, "listening"))
    grandchild = next(r["grandchild_pid"] for r in records(rec) if r["grandchild_pid"])
    # when
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    # then: left behind in the group until the group is killed
    assert proc.returncode == 0
    assert alive(grandchild)
    assert os.getpgid(grandchild) == proc.pid
    os.killpg(proc.pid, signal.SIGKILL)
    wait_until(lambda: not alive(grandchild))


def test_big_line_is_emitted_complete(spawn: Spawn) -> None:
    # given
    size = 1 << 20
    # when
    proc = spawn("--fake-big-line", str(size), "--fake-crash-after", "0", "--fake-exit-code", "0")
    out, _ = proc.communicate(timeout=10)
    # then
    big, progress, done, *_ = out.split(b"\n")
    assert big == b"x" * size
    assert progress.count(b"\r") >= 5
    assert done == b"big line done"


def test_key_is_printed_only_with_echo_key(spawn: Spawn) -> None:
    args = ("--api-key", KEY, "--fake-crash-after", "0.1", "--fake-exit-code", "0")
    quiet, loud = spawn(*args, port=free_port()), spawn(*args, "--fake-echo-key", port=free_port())
    quiet_out, _ = quiet.communicate(timeout=10)
    loud_out, _ = loud.communicate(timeout=10)
    assert KEY.encode() not in quiet_out
    assert KEY.encode() in loud_out


def test_key_file_mode_rereads_the_key_on_every_request(spawn: Spawn, tmp_path: Path) -> None:
    # given
    port, key_file = free_port(), tmp_path / "credentials.json"
    key_file.write_text(json.dumps({"apiKey": "a" * 22}))
    spawn(
        "--middleware",
        "vllmd.guard.ApiKeyGuard",
        port=port,
        env={"VLLMD_KEY_FILE": str(key_file)},
    )
    wait_until(lambda: health(port))
    assert request(port, "/v1/models", key="a" * 22)[0] == 200
    # when
    key_file.write_text(json.dumps({"apiKey": "b" * 22}))
    # then
    assert request(port, "/v1/models", key="a" * 22)[0] == 401
    assert request(port, "/v1/models", key="b" * 22)[0] == 200
    key_file.unlink()
    assert request(port, "/v1/models", key="b" * 22)[0] == 401


def test_health_turns_503_and_http_hangs_when_asked(spawn: Spawn) -> None:
    # given
    sick, wedged = free_port(), free_port()
    spawn("--fake-unhealthy-after", "0.1", port=sick)
    proc = spawn("--fake-hang-after", "0", port=wedged)
    # then
    wait_until(lambda: health(sick) == 503)
    wait_until(lambda: port_is_bound(wedged) and health_or_timeout(wedged) == "timeout")
    # and SIGTERM still stops it, with threads stuck in requests
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def health_or_timeout(port: int) -> int | str | None:
    try:
        return request(port, "/health", timeout_s=0.2)[0]
    except ConnectionRefusedError:
        return None
    except TimeoutError:
        return "timeout"


def test_never_listen_keeps_refusing(spawn: Spawn) -> None:
    port = free_port()
    proc = spawn("--fake-never-listen", "--fake-crash-after", "0.3", port=port)
    wait_until(lambda: port_is_bound(port))
    assert health(port) is None
    proc.communicate(timeout=10)
    assert proc.returncode == 1


def test_download_grows_while_loading_and_shards_are_reported(spawn: Spawn, tmp_path: Path) -> None:
    # given
    port, models = free_port(), tmp_path / "models"
    partial = models / "models--fake--download" / "blobs" / "partial.incomplete"
    proc = spawn(
        "--download-dir",
        str(models),
        "--fake-write-mb-per-s",
        "2",
        "--fake-shards",
        "3",
        "--fake-listen-delay",
        "0.5",
        port=port,
    )
    # then: the partial file grows, and is renamed when loading ends
    wait_until(lambda: partial.exists() and partial.stat().st_size > 100_000)
    wait_until(lambda: health(port))
    assert not partial.exists()
    assert partial.with_suffix("").stat().st_size >= 900_000
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    shard_lines = [line for line in err.decode().splitlines() if "checkpoint shards" in line]
    assert len(shard_lines) == 4
    assert re.search(r": 100% Completed \| 3/3 \[00:00<00:00, +[\d.]+it/s\]$", shard_lines[-1])
