"""Supervision, crashes, signals, PID-1 duties, ldconfig and logs (CONTRACT §2.1, §2.5–2.9)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import Volumes, group_alive, pid_alive, wait_for


def _grandchild(volumes: Volumes) -> int:
    return wait_for(
        lambda: next((r["grandchild_pid"] for r in volumes.records() if r.get("grandchild_pid")),
                     None),
        what="the grandchild",
    )  # fmt: skip


def test_sigterm_stops_vllm_and_its_group_and_exits_0(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--fake-grandchild"))
    daemon = start_daemon()
    record = daemon.wait_starts(1)[0]
    _grandchild(volumes)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert group_alive(record["pgid"]) == []
    events = [r.get("event") for r in volumes.records() if r.get("pid") == record["pid"]]
    assert events.count("sigterm") == 1  # one TERM to the main process, not the group


def test_sigterm_reaches_vllm_before_the_daemon_winds_anything_down(
    volumes: Volumes, start_daemon
) -> None:
    # given a running vLLM; when vllmd gets SIGTERM
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    record = daemon.wait_starts(1)[0]
    daemon.wait_health("success")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    # then the signal task relayed it first: vLLM had its SIGTERM before "received SIGTERM" and
    # "stopping" were logged (the stop target rests on this order)
    log = daemon.stderr()
    relayed = log.index(f"stopping vLLM (pid {record['pid']}) with SIGTERM")
    assert relayed < log.index("received SIGTERM") < log.index(": stopping\n"), log


def test_sigint_stops_cleanly_too(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    record = daemon.wait_starts(1)[0]
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit() == 0
    assert not pid_alive(record["pid"])


def test_stop_kills_the_group_after_the_stop_timeout(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--fake-ignore-sigterm", "--fake-grandchild",
                                           "--fake-grandchild-ignores-term"))  # fmt: skip
    daemon = start_daemon("--stop-timeout", "1", "--drain-timeout", "0")
    record = daemon.wait_starts(1)[0]
    _grandchild(volumes)
    daemon.wait_health("success")
    began = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert time.monotonic() - began >= 1.0
    assert group_alive(record["pgid"]) == []
    assert "did not stop within 1 s" in daemon.stderr()


def test_second_sigterm_kills_at_once(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--fake-ignore-sigterm"))
    daemon = start_daemon("--stop-timeout", "60")
    record = daemon.wait_starts(1)[0]
    daemon.wait_health("success")
    daemon.signal(signal.SIGTERM)
    daemon.wait_log("stopping vLLM")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=10) == 0
    assert not pid_alive(record["pid"])
    assert "killing vLLM now" in daemon.stderr()


def test_leftovers_of_the_group_are_killed_when_the_main_process_exits(
    volumes: Volumes, start_daemon
) -> None:
    volumes.set_args(
        *volumes.standin_args(
            "org/m",
            "--fake-grandchild",
            "--fake-orphan-grandchild",
            "--fake-crash-after",
            "1",
            "--fake-exit-code",
            "3",
        )
    )
    daemon = start_daemon()
    first = daemon.wait_starts(1)[0]
    grandchild = _grandchild(volumes)
    wait_for(lambda: not pid_alive(grandchild), what="the orphaned grandchild killed")
    assert group_alive(first["pgid"]) == []


def test_a_crash_restarts_after_its_back_off(volumes: Volumes, start_daemon) -> None:
    # The wiring (exit noticed, restart scheduled, restarted); the schedule itself (1, 2, 4 …
    # s, capped, reset) is a table in test_decide and test_reconciler.
    volumes.set_args(
        *volumes.standin_args("org/m", "--fake-crash-after", "0", "--fake-exit-code", "7")
    )
    daemon = start_daemon()
    first, second = daemon.wait_starts(2, timeout=15)[:2]
    assert second["t_mono"] - first["t_mono"] >= 1.0
    health = daemon.wait_health("failure")
    assert "exited with status 7" in health["message"]


def test_a_line_of_a_megabyte_and_progress_bars_pass_through(
    volumes: Volumes, start_daemon
) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--fake-big-line", str(1 << 20)))
    daemon = start_daemon()
    wait_for(lambda: "big line done" in daemon.stdout(), what="the line after the big one")
    assert "x" * (1 << 20) in daemon.stdout()
    daemon.wait_health("success")


def _orphaning_vllm(tmp_path: Path, linger_s: float) -> tuple[Path, Path]:
    """A vLLM that double-forks: its grandchild leaves vLLM's session, is orphaned, writes its
    pid, lingers and exits. Only reaping (PID 1, or a subreaper) can clear it then."""
    orphan_pid = tmp_path / "orphan-pid"
    script = tmp_path / "vllm"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(orphan_pid)!r}, 'w').write(str(os.getpid()))\n"
        f"        time.sleep({linger_s}); os._exit(0)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "time.sleep(60)\n"
    )
    script.chmod(0o755)
    return script, orphan_pid


def test_orphaned_zombies_are_reaped(volumes: Volumes, start_daemon, tmp_path: Path) -> None:
    script, orphan_pid = _orphaning_vllm(tmp_path, linger_s=1.0)
    volumes.set_args("org/m")
    daemon = start_daemon("--vllm", str(script))
    pid = int(wait_for(lambda: orphan_pid.exists() and orphan_pid.read_text(), what="the orphan"))

    def parent() -> int | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return int(stat[stat.rindex(")") + 2 :].split()[1])

    # The daemon is a subreaper: the orphan becomes its child (not init's), then is reaped.
    wait_for(lambda: parent() == daemon.pid, what="the orphan reparented to the daemon")
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the orphan reaped")


@pytest.mark.skipif(os.geteuid() != 0, reason="ldconfig runs only as root")
def test_ldconfig_runs_once_at_start_unless_skipped(volumes: Volumes, start_daemon,
                                                    tmp_path: Path) -> None:  # fmt: skip
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "ldconfig-calls"
    fake = bin_dir / "ldconfig"
    fake.write_text(f"#!/bin/sh\necho called >> {calls}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "vllmd", "run", "--data", str(volumes.data), "--public",
            str(volumes.public), "--run-dir", str(volumes.run)]  # fmt: skip
    daemon = start_daemon(env=env, argv=argv)
    assert calls.read_text() == "called\n"
    daemon.signal(signal.SIGTERM)
    daemon.wait_exit()
    daemon = start_daemon(env=env, argv=[*argv, "--no-ldconfig"])
    assert calls.read_text() == "called\n"


def test_log_lines_are_level_component_message(volumes: Volumes, start_daemon) -> None:
    daemon = start_daemon()
    daemon.signal(signal.SIGTERM)
    daemon.wait_exit()
    lines = daemon.stderr().splitlines()
    assert lines
    for line in lines:
        level, rest = line.split(" ", 1)
        assert level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        assert ": " in rest


def test_json_log_format_is_one_object_per_line(
    volumes: Volumes, start_daemon, tmp_path: Path
) -> None:
    errors = tmp_path / "errors.log"
    errors.write_text("ERROR 10-14 09:12:44 [core.py:1] something broke\nplain line\n")
    volumes.set_args(*volumes.standin_args("org/m", "--fake-stderr-file", str(errors),
                                           "--fake-big-line", "100000"))  # fmt: skip
    daemon = start_daemon("--log-format", "json")
    daemon.wait_health("success")
    wait_for(lambda: "big line done" in daemon.stdout(), what="vLLM's output")
    daemon.signal(signal.SIGTERM)
    daemon.wait_exit()
    ours = [json.loads(line) for line in daemon.stderr().splitlines()]
    passed = [json.loads(line) for line in daemon.stdout().splitlines()]
    assert ours and passed
    for entry in ours + passed:
        assert {"time", "level", "component", "message"} <= set(entry)
    vllm_err = [e for e in ours if e["component"] == "vllm"]
    assert {"stream": "stderr", "level": "ERROR"}.items() <= vllm_err[0].items()
    assert any(e["message"] == "big line done" for e in passed)


def test_python_dash_m_vllmd_works() -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "vllmd", "--version"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.startswith("vllmd ")


def _child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return int(wait_for(lambda: children.read_text().split(), what="the daemon under unshare")[0])


def _host_pid(ns_link: str, ns_pid: int) -> int | None:
    """The host pid of the process that has ``ns_pid`` inside the pid namespace ``ns_link``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != ns_link:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("NSpid:") and line.split()[-1] == str(ns_pid):
                    return int(entry.name)
        except OSError:
            continue
    return None


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)
def test_as_pid_1_it_reaps_orphans_and_stops_on_sigterm(
    volumes: Volumes, start_daemon, tmp_path: Path
) -> None:
    script, orphan_pid = _orphaning_vllm(tmp_path, linger_s=1.0)
    volumes.set_args("org/m")
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "vllmd", "run",
            "--data", str(volumes.data), "--public", str(volumes.public), "--run-dir",
            str(volumes.run), "--vllm", str(script), "--no-ldconfig", "--port", "1"]  # fmt: skip
    outer = start_daemon(argv=argv)
    daemon_pid = _child_of(outer.pid)
    try:
        assert wait_for(volumes.health_json)["pid"] == 1
        ns_link = os.readlink(f"/proc/{daemon_pid}/ns/pid")
        ns_pid = int(
            wait_for(lambda: orphan_pid.exists() and orphan_pid.read_text(), what="orphan")
        )
        host_pid = wait_for(lambda: _host_pid(ns_link, ns_pid), what="the orphan's host pid")
        wait_for(lambda: not Path(f"/proc/{host_pid}").exists(), what="the orphan reaped by PID 1")
        os.kill(daemon_pid, signal.SIGTERM)
        assert outer.wait_exit() == 0
    finally:
        if pid_alive(daemon_pid):  # unshare does not pass signals on: end the namespace here
            os.kill(daemon_pid, signal.SIGKILL)
