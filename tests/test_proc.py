"""The one ``/proc`` reader (vllmd.process.proc): fake ``/proc`` trees for the parsing rules, one
real process for the wiring."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vllmd.process import proc


def _stat_line(pid: int, comm: str, state: str, pgid: int, start: int = 4242) -> str:
    # Fields 3.. of proc(5): state, ppid, pgrp, session, ... field 22 is the start time.
    rest = [state, "1", str(pgid), str(pgid)] + ["0"] * 15 + [str(start)] + ["0"] * 10
    return f"{pid} ({comm}) {' '.join(rest)}\n"


def _fake_process(root: Path, pid: int, comm: str, state: str, pgid: int) -> None:
    folder = root / str(pid)
    (folder / "task" / str(pid)).mkdir(parents=True)
    (folder / "stat").write_text(_stat_line(pid, comm, state, pgid))
    (folder / "status").write_text(f"Name:\t{comm}\nState:\t{state}\nThreads:\t1\n")
    (folder / "task" / str(pid) / "status").write_text("voluntary_ctxt_switches:\t7\n")
    (folder / "cmdline").write_bytes(b"vllm\0serve\0m\0")


def test_stat_survives_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    # Given a process whose command name looks like the end of the name field
    _fake_process(tmp_path, 10, "a) Z 1 (b", "S", 10)
    # When its stat is read
    fields = proc.stat(10, tmp_path)
    # Then the fields start at the state, and field 22 is the start time
    assert fields is not None and fields[0] == "S" and fields[2] == "10"
    assert proc.start_time(10, tmp_path) == 4242


def test_group_members_are_the_live_members_only(tmp_path: Path) -> None:
    # Given a group with a live member, a zombie and a dead one, and a process of another group
    _fake_process(tmp_path, 10, "vllm", "S", 10)
    _fake_process(tmp_path, 11, "VLLM::EngineCore", "Z", 10)
    _fake_process(tmp_path, 12, "worker", "X", 10)
    _fake_process(tmp_path, 13, "other", "R", 99)
    (tmp_path / "self").mkdir()  # not a pid: skipped
    # When the group's members are read
    members = proc.group_members(10, tmp_path)
    # Then only the live member counts
    assert members == [10]
    assert proc.is_alive(10, tmp_path) and not proc.is_alive(11, tmp_path)


def test_a_process_that_is_gone_reads_as_none_everywhere(tmp_path: Path) -> None:
    # Given an empty /proc: when each reader looks for pid 10, then none of them raises
    assert proc.stat(10, tmp_path) is None
    assert proc.status(10, tmp_path) is None
    assert proc.cmdline(10, tmp_path) is None
    assert proc.start_time(10, tmp_path) is None
    assert proc.threads(10, tmp_path) == []
    assert not proc.is_alive(10, tmp_path)
    assert proc.group_members(10, tmp_path / "missing") == []
    assert proc.boot_id(tmp_path) is None


def test_status_reads_the_process_and_each_thread(tmp_path: Path) -> None:
    # Given one process with one thread
    _fake_process(tmp_path, 10, "vllm", "S", 10)
    # When its status, threads, per-thread status and command line are read
    # Then each is parsed into names and values
    assert proc.status(10, tmp_path) == {"Name": "vllm", "State": "S", "Threads": "1"}
    assert proc.threads(10, tmp_path) == [10]
    assert proc.status(10, tmp_path, thread=10) == {"voluntary_ctxt_switches": "7"}
    assert proc.cmdline(10, tmp_path) == ["vllm", "serve", "m"]


def test_a_real_process_group_is_seen_until_its_leader_is_reaped() -> None:
    # Given a real child in its own process group
    script = "import time; print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"  # it has exec'd
        # Then /proc shows it alive, in its group, with our boot's start time
        assert proc.group_members(child.pid) == [child.pid]
        assert proc.is_alive(child.pid) and proc.start_time(child.pid) is not None
        assert proc.cmdline(child.pid) == [sys.executable, "-c", script]
        assert proc.boot_id() is not None and os.getpid() in proc.pids()
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
    # When it is killed and reaped, then its group is empty
    assert proc.group_members(child.pid) == [] and not proc.is_alive(child.pid)
