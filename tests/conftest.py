"""Shared test harness: temporary volumes, the real ``vllmd run`` as a subprocess, deadlines.

Every wait is a condition polled under a deadline (``wait_for``); every process a test starts is
killed at teardown, whether or not the test passed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.hub import Hub

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin" / "vllm"

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def say_uncaptured(session: pytest.Session) -> Callable[[str], None]:
    """A printer that reaches the terminal even under pytest's capture (a tier's slow set-up)."""
    capture = session.config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        if capture is None:
            print(line, flush=True)
            return
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    return say


def ipv6_loopback_bound(port: int) -> socket.socket | None:
    """A socket bound to ``[::1]:port`` (IPv6 only), or None where this machine has no IPv6."""
    v6 = socket.socket(socket.AF_INET6)
    try:
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::1", port))
    except OSError:
        v6.close()
        return None
    return v6


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval=0.01
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` the way StartOS does: temp file, then rename."""
    tmp = path.with_name(f".{path.name}.test-tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The stand-in's record file as a list of JSON objects (empty when absent)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    if not text.endswith("\n"):  # a stand-in is writing its last line right now: not yet a record
        text = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def group_alive(pgid: int) -> list[int]:
    """Live members of process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            members.append(int(entry.name))
    return members


@dataclass
class Volumes:
    """The three folders of one daemon, under a test's tmp_path."""

    root: Path
    data: Path = field(init=False)
    public: Path = field(init=False)
    run: Path = field(init=False)
    record: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.root / "data"
        self.public = self.root / "public"
        self.run = self.root / "run"
        self.record = self.root / "record.jsonl"

    @property
    def store(self) -> Path:
        return self.data / "store.json"

    @property
    def credentials(self) -> Path:
        return self.public / "credentials.json"

    @property
    def health(self) -> Path:
        return self.run / "health.json"

    def key(self) -> str:
        return str(json.loads(self.credentials.read_text())["apiKey"])

    def set_args(self, *args: str, **extra: Any) -> None:
        """Write ``store.json`` with ``serveArgs`` (plus other top-level keys) atomically."""
        self.data.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.store, {"serveArgs": list(args), **extra})

    def standin_args(self, model: str = "org/model", *fake: str) -> list[str]:
        """serveArgs for the stand-in that record to this volume's record file."""
        return [model, "--fake-record", str(self.record), *fake]

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.record)

    def starts(self) -> list[dict[str, Any]]:
        """One record per stand-in process started."""
        return [r for r in self.records() if "argv" in r]

    def health_json(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.health.read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, json.JSONDecodeError):
            return None


@dataclass
class Daemon:
    """One ``vllmd run`` subprocess with its output in files."""

    volumes: Volumes
    port: int
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        wait_for(lambda: text in self.stderr(), timeout, f"log line {text!r}")

    def wait_starts(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (s := self.volumes.starts()) and len(s) >= n and s, timeout, f"{n} start(s)"
        )

    def wait_health(self, result: str, timeout: float = 20.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            health = self.volumes.health_json()
            return health if health and health["result"] == result else None

        return wait_for(check, timeout, f"health {result!r}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def volumes(tmp_path: Path) -> Volumes:
    return Volumes(tmp_path)


@pytest.fixture
def start_daemon(volumes: Volumes) -> Iterator[Callable[..., Daemon]]:
    """Start ``vllmd run`` on the test's volumes with the stand-in as vLLM."""
    started: list[Daemon] = []

    def start(
        *flags: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        wait_ready: bool = True,
        argv: Sequence[str] | None = None,
    ) -> Daemon:
        port = port or free_port()
        n = len(started)
        out_path = volumes.root / f"daemon{n}.out"
        err_path = volumes.root / f"daemon{n}.err"
        command = (
            list(argv)
            if argv is not None
            else [
                sys.executable,
                "-m",
                "vllmd",
                "run",
                "--data",
                str(volumes.data),
                "--public",
                str(volumes.public),
                "--run-dir",
                str(volumes.run),
                "--vllm",
                str(STANDIN),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ldconfig",
                "--stop-timeout",
                "5",
                *flags,
            ]
        )
        # The stand-in's `#!/usr/bin/env python3` should find this interpreter, not a slower
        # version-manager shim.
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        # vllmd fetches hub models before launching them; the stand-in's "org/..." ids are not on
        # any hub, so the daemons of these tests leave the download to "vLLM" unless a test
        # asks for the fetch (env={"VLLMD_FETCH": "true"}, with the test hub).
        full_env = {
            **os.environ,
            "PATH": path,
            "PYTHONPATH": str(ROOT),
            "VLLMD_FETCH": "false",
            **(env or {}),
        }
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=full_env, cwd=ROOT)
        daemon = Daemon(volumes, port, proc, out_path, err_path)
        started.append(daemon)
        if wait_ready:
            daemon.wait_log("vllmd is up")
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(10)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait()
    # Whatever a stand-in left behind (a test that failed half-way) dies with the test.
    for record in volumes.records():
        for pid in (record.get("pid"), record.get("grandchild_pid")):
            if pid and pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for pid in group_alive(record["pgid"]) if record.get("pgid") else []:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A HuggingFace-compatible hub on 127.0.0.1 serving ``tmp_path/hub`` (see ``tests/hub.py``);
    point a client at it with ``hub.env()`` (``HF_ENDPOINT``)."""
    root = tmp_path / "hub"
    root.mkdir()
    served = Hub(root)
    served.start()
    yield served
    served.stop()
