"""Signals and escapes: the daemon outlives stray signals, and no descendant of vLLM outlives it.

Issue 11, class 7: SIGHUP, SIGUSR1 and SIGUSR2 killed the daemon without a word (vLLM orphaned);
a descendant of vLLM that called ``setsid`` left the process group and survived every restart and
the daemon's own exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Volumes, pid_alive, wait_for
from vllmd.process.proc import descendants

# A "vLLM" whose worker escapes: it forks a child that calls setsid (a new session and group),
# records that pid, and then both sleep until killed.
ESCAPING_VLLM = textwrap.dedent(
    """\
    #!{python}
    import os, sys, time
    record = os.environ["ESCAPE_RECORD"]
    pid = os.fork()
    if pid == 0:
        os.setsid()
        with open(record, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        while True:
            time.sleep(60)
    print("serving", flush=True)
    while True:
        time.sleep(60)
    """
)


def _escapees(record: Path) -> list[int]:
    try:
        return [int(line) for line in record.read_text().split()]
    except FileNotFoundError:
        return []


@pytest.fixture
def escaping_vllm(tmp_path: Path) -> tuple[Path, Path]:
    program = tmp_path / "escaping-vllm"
    program.write_text(ESCAPING_VLLM.format(python=sys.executable))
    program.chmod(0o755)
    return program, tmp_path / "escapees.txt"


def test_descendants_include_those_that_left_the_group(escaping_vllm: tuple[Path, Path]) -> None:
    # given: a process whose child moved to its own session
    program, record = escaping_vllm
    proc = subprocess.Popen(
        [str(program)], env={**os.environ, "ESCAPE_RECORD": str(record)}, stdout=subprocess.DEVNULL
    )
    try:
        escapee = wait_for(lambda: _escapees(record), 10, "the escapee")[0]
        # when/then: its descendants include the child that left its group
        assert os.getpgid(escapee) != os.getpgid(proc.pid)
        assert descendants(proc.pid) == [escapee]
    finally:
        for pid in _escapees(record):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


@pytest.fixture
def escapees_killed() -> list[int]:
    """Pids a test saw escape; whatever survives the test is killed at teardown."""
    seen: list[int] = []
    yield seen
    for pid in seen:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_no_descendant_of_vllm_outlives_a_restart_or_the_daemon(
    volumes: Volumes, start_daemon, escaping_vllm: tuple[Path, Path], escapees_killed: list[int]
) -> None:
    # given: a daemon running a vLLM whose worker escaped into its own session
    program, record = escaping_vllm
    volumes.set_args("org/one")
    daemon = start_daemon("--vllm", str(program), env={"ESCAPE_RECORD": str(record)})
    first = wait_for(lambda: _escapees(record), 10, "the first escapee")[0]
    escapees_killed.append(first)
    # when: the configuration changes (a restart)
    volumes.set_args("org/two")
    # then: the escapee of the first vLLM is gone before the second one runs
    second = wait_for(lambda: _escapees(record)[1:], 15, "the second escapee")[0]
    escapees_killed.append(second)
    assert not pid_alive(first)
    # when: the daemon is stopped
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    # then: the escapee of the second vLLM is gone too
    wait_for(lambda: not pid_alive(second), 5, "the second escapee gone")


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2])
def test_stray_signals_are_logged_and_change_nothing(
    volumes: Volumes, start_daemon, signum: signal.Signals
) -> None:
    # given: a daemon serving a model
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    daemon.wait_health("success")
    pid = daemon.wait_starts(1)[0]["pid"]
    # when: a signal it has no use for arrives
    daemon.signal(signum)
    # then: it says so, and the daemon and vLLM go on
    daemon.wait_log(f"received {signum.name}")
    assert daemon.proc.poll() is None and pid_alive(pid)
    assert len(volumes.starts()) == 1
    # and: SIGTERM still stops everything
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert not pid_alive(pid)
