"""``health.json``: written atomically on change only; ``vllmd health`` exit codes 0 / 1 / 2."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vllmd.core.health import SET_MODEL_TASK, Verdict
from vllmd.daemon.healthfile import (
    EXIT_NO_DAEMON,
    EXIT_SUCCESS,
    EXIT_UNHEALTHY,
    HealthPublisher,
    health_command,
    is_live_vllmd,
    read_health,
)
from vllmd.settings import Settings

LOADING = Verdict("loading", "The vLLM API is starting.", None, {"phase": "starting"})
READY = Verdict("success", "The vLLM API is ready", None, {"phase": "ready"})
NO_MODEL = Verdict("failure", "No model selected.", dict(SET_MODEL_TASK), {"phase": "no-model"})
DAEMON_PID = 4_242


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fake_proc(root: Path, pid: int, *argv: str) -> Path:
    """A ``/proc/<pid>/cmdline`` holding ``argv`` (an empty one: a zombie)."""
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
    return root


def run_health(settings: Settings, proc_root: Path, text: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = health_command(
        argparse.Namespace(text=text), settings, proc_root=proc_root, stdout=out, stderr=err
    )
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data=tmp_path / "data", public=tmp_path / "public", run_dir=tmp_path / "run")


@pytest.fixture
def publisher(settings: Settings) -> HealthPublisher:
    settings.run_dir.mkdir()
    return HealthPublisher(settings.health_path, DAEMON_PID, wall_clock=FakeClock())


# -- publishing ------------------------------------------------------------------------------------


def test_the_file_holds_the_contract_fields(publisher: HealthPublisher) -> None:
    assert publisher.publish(NO_MODEL)

    document = json.loads(publisher.path.read_text())
    assert list(document) == ["result", "message", "since", "pid", "task", "detail"]
    assert document == {
        "result": "failure",
        "message": "No model selected.",
        "since": 1_700_000_000.0,
        "pid": DAEMON_PID,
        "task": SET_MODEL_TASK,
        "detail": {"phase": "no-model"},
    }
    assert stat.S_IMODE(publisher.path.stat().st_mode) == 0o644


def test_the_same_verdict_is_not_written_again(publisher: HealthPublisher) -> None:
    publisher.publish(LOADING)
    inode = publisher.path.stat().st_ino

    again = publisher.publish(Verdict(LOADING.result, LOADING.message, None, {"phase": "starting"}))

    assert not again
    assert publisher.path.stat().st_ino == inode  # not replaced


def test_since_changes_only_when_the_result_does(settings: Settings) -> None:
    settings.run_dir.mkdir()
    clock = FakeClock(100.0)
    publisher = HealthPublisher(settings.health_path, DAEMON_PID, wall_clock=clock)

    publisher.publish(LOADING)
    clock.now = 200.0
    assert publisher.publish(
        Verdict("loading", "The vLLM API is starting. Loading weights: shard 1/4.", None, {})
    )
    loading_since = read_health(settings.health_path)
    clock.now = 300.0
    publisher.publish(READY)
    ready_since = read_health(settings.health_path)

    assert loading_since is not None and loading_since["since"] == 100.0
    assert ready_since is not None and ready_since["since"] == 300.0


def test_a_removed_run_folder_is_made_again(settings: Settings) -> None:
    publisher = HealthPublisher(settings.health_path, DAEMON_PID)

    assert publisher.publish(READY)
    assert read_health(settings.health_path) is not None


def test_a_failed_write_is_logged_once_and_retried(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.run_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.run_dir.write_text("a file where the folder should be")
    publisher = HealthPublisher(settings.health_path, DAEMON_PID)

    with caplog.at_level(logging.WARNING, logger="vllmd.daemon.healthfile"):
        assert not publisher.publish(LOADING)
        assert not publisher.publish(LOADING)
    settings.run_dir.unlink()
    settings.run_dir.mkdir()
    written = publisher.publish(LOADING)

    assert len(caplog.records) == 1
    assert str(settings.health_path) in caplog.records[0].getMessage()
    assert written


def test_read_health_is_none_for_no_file_or_not_a_report(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")

    assert read_health(tmp_path / "missing.json") is None
    assert read_health(garbage) is None
    assert read_health(a_list) is None


# -- vllmd health ----------------------------------------------------------------------------------


def test_health_exits_0_on_success_from_a_live_daemon(
    publisher: HealthPublisher, settings: Settings, tmp_path: Path
) -> None:
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, "/usr/bin/python3", "/usr/bin/vllmd", "run")
    publisher.publish(READY)

    code, out, err = run_health(settings, proc)

    assert code == EXIT_SUCCESS == 0
    assert json.loads(out) == read_health(settings.health_path)
    assert out.startswith('{\n  "result": "success"')  # pretty
    assert err == ""


@pytest.mark.parametrize("verdict", [LOADING, NO_MODEL], ids=["loading", "failure"])
def test_health_exits_1_when_not_ready(
    publisher: HealthPublisher, settings: Settings, tmp_path: Path, verdict: Verdict
) -> None:
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, "python", "-m", "vllmd", "run")
    publisher.publish(verdict)

    code, out, _ = run_health(settings, proc)

    assert code == EXIT_UNHEALTHY == 1
    assert json.loads(out)["result"] == verdict.result


def test_health_exits_2_without_a_file(settings: Settings, tmp_path: Path) -> None:
    code, out, err = run_health(settings, tmp_path / "proc")

    assert code == EXIT_NO_DAEMON == 2
    assert out == ""
    assert "no health report" in err
    assert str(settings.health_path) in err


def test_health_exits_2_for_a_stale_file_from_a_dead_daemon(
    publisher: HealthPublisher, settings: Settings, tmp_path: Path
) -> None:
    publisher.publish(READY)  # healthy when it died

    code, out, err = run_health(settings, tmp_path / "proc")  # no such pid

    assert code == EXIT_NO_DAEMON
    assert out == ""
    assert f"pid {DAEMON_PID}" in err
    assert "not running" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("nginx", "-g", "daemon off;"),  # the pid was reused by another program
        (),  # a zombie: its command line is empty
        ("/usr/bin/python3", "/usr/bin/vllmd", "health"),  # a health check, not the daemon
    ],
    ids=["other-program", "zombie", "vllmd-health"],
)
def test_health_exits_2_when_the_pid_is_not_a_vllmd_daemon(
    publisher: HealthPublisher, settings: Settings, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, *argv)
    publisher.publish(READY)

    code, _, _ = run_health(settings, proc)

    assert code == EXIT_NO_DAEMON


def test_health_exits_2_for_a_file_that_is_not_a_report(settings: Settings, tmp_path: Path) -> None:
    settings.run_dir.mkdir()
    settings.health_path.write_text("")

    code, _, err = run_health(settings, tmp_path / "proc")

    assert code == EXIT_NO_DAEMON
    assert "does not hold a health report" in err


def test_health_text_form(publisher: HealthPublisher, settings: Settings, tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, "vllmd", "run")
    publisher.publish(LOADING)

    code, out, _ = run_health(settings, proc, text=True)

    assert (code, out) == (EXIT_UNHEALTHY, "loading: The vLLM API is starting.\n")


def test_a_live_daemon_is_recognised_on_the_real_proc() -> None:
    # a stand-in whose command line names vllmd, as `python -m vllmd run` does
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "vllmd", "run"],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not is_live_vllmd(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # exec takes a moment to replace the forked command line
        assert is_live_vllmd(child.pid)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert not is_live_vllmd(child.pid)
    assert not is_live_vllmd(os.getpid())  # pytest is not vllmd


def test_vllmd_health_imports_neither_anyio_nor_aiohttp() -> None:
    code = (
        "import sys, vllmd.daemon.healthfile; "
        "print(sorted(m for m in ('anyio', 'aiohttp', 'msgspec') if m in sys.modules))"
    )

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )

    assert done.stdout.strip() == "[]"
