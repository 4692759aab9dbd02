"""``python -m bench --real``: vllmd over the real CPU vLLM, next to ``vllm serve`` run directly.

Not part of CI: it needs the e2e tier's prepared CPU vLLM (``python tests/e2e/prepare.py``) and
minutes of two cores. Figures, each next to its floor in the same run, rounds alternating so that a
slow moment of the machine lands on both:

- **ready**: Set Model (an atomic write of ``store.json`` to an idle daemon) → ``health.json`` says
  success; floor: ``vllm serve`` started directly with the very argv and environment vllmd would
  launch → its ``/health`` answers 200 (asked every 10 ms). Target: ≤ floor + 0.3 s.
- **key rotation** (``--auth guard``): ``credentials.json`` deleted → the new key is accepted.
- **stop**: SIGTERM to vllmd → vllmd exited, vLLM's group empty; floor: SIGTERM straight to the
  direct ``vllm serve`` → it exited. Target: ≤ floor + 50 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.files import BenchError, Volumes, valid_key, write_json_atomic
from bench.procs import Fleet, free_port, ms, wait_exit
from vllmd.core.launch import plan_launch
from vllmd.core.schema import Store
from vllmd.daemon.prepare import install_guard
from vllmd.demo import cpuenv
from vllmd.process.proc import group_members
from vllmd.settings import Settings

READY_PLUS_S = 0.3
STOP_PLUS_MS = 50.0
LOAD_S = 900.0
"""How long one real vLLM may take to be ready here (31-90 s measured on two busy cores)."""


def _env(scratch: Path, hub: Mapping[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment: ours without ``PYTHONPATH`` (nothing of the benchmark leaks into
    vLLM's Python), the CPU vLLM's offline switches, scratch files under ``scratch``. With
    ``hub`` (the test hub's variables), online instead: vllmd fetches from there."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(cpuenv.run_env(scratch))
    if hub is not None:
        env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(hub)
    return env


def _health_200(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _models_status(port: int, key: str) -> int:
    request = f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((request + "Connection: close\r\n\r\n").encode())
        return int(s.recv(64).split()[1])


def _poll(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
    return value


class Real:
    """The prepared CPU vLLM and the folders and processes of one ``--real`` run."""

    def __init__(self, fleet: Fleet, env: cpuenv.CpuEnv, log: Callable[[str], None]) -> None:
        self.fleet, self.env, self.log = fleet, env, log
        self.sessions: set[int] = set()

    def daemon(
        self, v: Volumes, *flags: str, hub: Mapping[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], int, float]:
        """Start ``vllmd run`` over the CPU vLLM on ``v``; return (proc, port, t_exec). With
        ``hub``, online (see :func:`_env`)."""
        port = free_port()
        argv = [sys.executable, "-m", "vllmd", "run", "--data", str(v.data), "--public"]
        argv += [str(v.public), "--run-dir", str(v.run), "--vllm", str(self.env.vllm)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--no-ldconfig", *flags]
        env = _env(v.root / "scratch", hub)
        with (v.root / "daemon.log").open("ab") as out:
            t0 = time.monotonic()
            proc = self.fleet.popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        return proc, port, t0

    def vllm_pid(self, v: Volumes) -> int:
        """The pid of the last vLLM the daemon on ``v`` started (from its log)."""
        text = (v.root / "daemon.log").read_text(errors="replace")
        pid = int(text.rsplit("started vLLM, pid ", 1)[1].split(":", 1)[0])
        self.sessions.add(pid)
        return pid

    def kill_leftovers(self) -> None:
        """Kill whatever any vLLM of this run left in its group (vLLM runs in its own)."""
        for session in self.sessions:
            for pid in group_members(session):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def ready_and_stop(real: Real, rounds: int) -> dict[str, list[float]]:
    """Rounds of the direct ``vllm serve`` (floor) and vllmd's Set Model, in ABBA order (the
    first of a round is the other one in the next), so that neither always goes first."""
    out: dict[str, list[float]] = {k: [] for k in ("ready_floor", "ready", "stop_floor", "stop")}
    out["rotation"] = []
    for i in range(rounds):
        pair = (_direct_round, _vllmd_round)
        for run_one in pair if i % 2 == 0 else pair[::-1]:
            run_one(real, i, out)
    return out


def _direct_round(real: Real, i: int, out: dict[str, list[float]]) -> None:
    """The floor: exactly what vllmd launches, started by hand; ready, then SIGTERM."""
    v = real.fleet.volumes(f"direct-{i}")
    port = free_port()
    settings = Settings(
        data=v.data, public=v.public, run_dir=v.run, vllm=str(real.env.vllm),
        host="127.0.0.1", port=port,
    )  # fmt: skip
    launch = plan_launch(
        Store(serveArgs=real.env.chat_args), "k" * 22, settings, _env(v.root / "scratch"),
        install_guard(v.run),
    ).launch  # fmt: skip
    assert launch is not None
    v.credentials.write_text(json.dumps({"apiKey": "k" * 22}))
    real.log(f"real: round {i + 1}: vllm serve directly")
    with (v.root / "vllm.log").open("wb") as log:
        t0 = time.monotonic()
        proc = real.fleet.popen(launch.argv, env=launch.environ, stdout=log, stderr=log)
    real.sessions.add(proc.pid)
    _poll(lambda: _health_200(port), LOAD_S, "vllm serve to be ready", 0.01)
    out["ready_floor"].append(ms(time.monotonic() - t0))
    time.sleep(2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    t1 = wait_exit(proc.pid, 60)
    if t1 is None:
        raise BenchError("vllm serve did not exit within 60 s of SIGTERM")
    out["stop_floor"].append(ms(t1 - t0))
    proc.wait(5)
    real.kill_leftovers()


def _vllmd_round(real: Real, i: int, out: dict[str, list[float]]) -> None:
    """vllmd idle, then Set Model → health success; the rotation once; then SIGTERM."""
    v = real.fleet.volumes(f"vllmd-{i}")
    proc, port, _ = real.daemon(v)
    v.wait_health("failure", timeout_s=60)  # idle: no model selected
    real.log(f"real: round {i + 1}: vllmd, Set Model")
    wall = time.time()
    t0 = write_json_atomic(v.store, {"serveArgs": list(real.env.chat_args)})
    seen = v.wait_health("success", after_wall=wall, timeout_s=LOAD_S)
    out["ready"].append(ms(seen - t0))
    if i == 0:
        out["rotation"] = rotation(v, port, 5)
    time.sleep(2)
    pgid = real.vllm_pid(v)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    t1 = wait_exit(proc.pid, 120)
    if t1 is None or group_members(pgid):
        raise BenchError("vllmd did not stop, or left vLLM's group behind")
    out["stop"].append(ms(t1 - t0))
    proc.wait(5)


def rotation(v: Volumes, port: int, n: int) -> list[float]:
    """Guard mode: ``credentials.json`` deleted → the new key answers 200 (and the old 401)."""
    out = []
    for _ in range(n):
        old = valid_key(v.credentials)
        t0 = time.monotonic()
        os.unlink(v.credentials)

        def accepted(old: str | None = old) -> bool:
            key = valid_key(v.credentials)
            return bool(key and key != old and _models_status(port, key) == 200)

        _poll(accepted, 10, "the new key to be accepted", 0.001)
        out.append(ms(time.monotonic() - t0))
        if old is not None and _models_status(port, old) != 401:
            raise BenchError("the old key still works after the rotation")
        time.sleep(0.5)
    return out


def prepared(log: Callable[[str], None]) -> cpuenv.CpuEnv:
    """The e2e tier's CPU vLLM and its two models (prepared once, then found)."""
    return cpuenv.prepare(log=log)
