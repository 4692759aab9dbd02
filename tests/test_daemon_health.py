"""Health that tells the truth (CONTRACT §3), from outside, as StartOS and a person see it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, Volumes

FIXTURES = Path(__file__).parent / "fixtures" / "vllm-logs"
LOADING = "The vLLM API is starting."


def _health_command(volumes: Volumes, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vllmd", "health", "--data", str(volumes.data), "--public",
         str(volumes.public), "--run-dir", str(volumes.run), *extra],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip


def test_loading_then_ready_once_vllm_listens(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--fake-listen-delay", "0.5"))
    daemon = start_daemon()
    loading = daemon.wait_health("loading")
    assert loading["message"].startswith(LOADING)
    ready = daemon.wait_health("success")
    assert ready["message"] == "The vLLM API is ready"
    assert ready["pid"] == daemon.pid and ready["task"] is None
    listening = next(r for r in volumes.records() if r.get("event") == "listening")
    assert listening  # success came only after the port listened
    assert ready["since"] >= loading["since"]


def test_crash_failure_names_exit_status_delay_and_error_line(
    volumes: Volumes, start_daemon
) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--fake-stderr-file",
                                           str(FIXTURES / "cuda-oom.log"), "--fake-crash-after",
                                           "0.2", "--fake-exit-code", "1"))  # fmt: skip
    daemon = start_daemon()
    failure = daemon.wait_health("failure")
    message = failure["message"]
    assert "exited with status 1" in message
    assert "1 s" in message or "1.0 s" in message
    assert "out of memory" in message.lower()
    assert "gpu-memory-utilization" in message


def test_health_command_exit_codes(volumes: Volumes, start_daemon) -> None:
    assert _health_command(volumes).returncode == 2  # no daemon, no file
    volumes.set_args(*volumes.standin_args("org/m", "--fake-listen-delay", "1"))
    daemon = start_daemon()
    daemon.wait_health("loading")
    loading = _health_command(volumes)
    assert loading.returncode == 1 and json.loads(loading.stdout)["result"] == "loading"
    daemon.wait_health("success")
    ready = _health_command(volumes, "--text")
    assert ready.returncode == 0 and ready.stdout.startswith("success: ")
    daemon.signal(signal.SIGTERM)
    daemon.wait_exit()
    stale = _health_command(volumes)
    assert stale.returncode == 2 and "not running" in stale.stderr


def test_stale_health_file_with_a_dead_pid_is_not_healthy(volumes: Volumes) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    volumes.run.mkdir(parents=True)
    volumes.health.write_text(json.dumps({"result": "success", "message": "The vLLM API is ready",
                                          "since": 0, "pid": dead.pid, "task": None,
                                          "detail": {}}))  # fmt: skip
    assert _health_command(volumes).returncode == 2
