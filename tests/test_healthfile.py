"""``health.json``: written atomically on change, and again when it is gone; ``vllmd health`` exit
codes 0 / 1 / 2, with 2 unless the daemon run named in the file (boot id, pid, start time) runs."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, Daemon, Volumes, wait_for

from vllmd.core.health import JSON, SET_MODEL_TASK, Verdict
from vllmd.daemon.healthfile import (
    CHECK_S,
    EXIT_NO_DAEMON,
    EXIT_SUCCESS,
    EXIT_UNHEALTHY,
    RETRY_S,
    HealthPublisher,
    Instance,
    health_command,
    is_live_vllmd,
    read_health,
)
from vllmd.process.proc import boot_id, start_time
from vllmd.settings import Settings

LOADING = Verdict("loading", "The vLLM API is starting.", None, {"phase": "starting"})
READY = Verdict("success", "The vLLM API is ready", None, {"phase": "ready"})
NO_MODEL = Verdict("failure", "No model selected.", dict(SET_MODEL_TASK), {"phase": "no-model"})
DAEMON_PID = 4_242
BOOT = "0f8fad5b-d9cb-469f-a165-70867728950e"
STARTED = 1_234_567
INSTANCE = Instance(BOOT, DAEMON_PID, STARTED)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fake_proc(
    root: Path, pid: int, *argv: str, started: int = STARTED, boot: str = BOOT, comm: str = "vllmd"
) -> Path:
    """A ``/proc`` with this boot's id and ``pid`` running ``argv`` (an empty one: a zombie),
    started at tick ``started``."""
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
    # fields 3..21 of proc(5), then 22: the start time, then a few more
    rest = ["S", "0", str(pid), str(pid)] + ["0"] * 15 + [str(started), "1000", "200"]
    (folder / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
    random = root / "sys" / "kernel" / "random"
    random.mkdir(parents=True, exist_ok=True)
    (random / "boot_id").write_text(boot + "\n")
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
    return HealthPublisher(
        settings.health_path, DAEMON_PID, wall_clock=FakeClock(), instance=INSTANCE
    )


# -- publishing ------------------------------------------------------------------------------------


def test_the_file_holds_the_contract_fields(publisher: HealthPublisher) -> None:
    assert publisher.publish(NO_MODEL)

    document = json.loads(publisher.path.read_text())
    assert list(document) == ["result", "message", "since", "pid", "task", "detail", "instance"]
    assert document == {
        "result": "failure",
        "message": "No model selected.",
        "since": 1_700_000_000.0,
        "pid": DAEMON_PID,
        "task": SET_MODEL_TASK,
        "detail": {"phase": "no-model"},
        "instance": {"boot_id": BOOT, "pid": DAEMON_PID, "started": STARTED},
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
    publisher = HealthPublisher(
        settings.health_path, DAEMON_PID, wall_clock=clock, instance=INSTANCE
    )

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
    publisher = HealthPublisher(settings.health_path, DAEMON_PID, instance=INSTANCE)

    assert publisher.publish(READY)
    assert read_health(settings.health_path) is not None


def test_a_failed_write_is_logged_once_and_retried(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.run_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.run_dir.write_text("a file where the folder should be")
    publisher = HealthPublisher(settings.health_path, DAEMON_PID, instance=INSTANCE)

    with caplog.at_level(logging.WARNING, logger="vllmd.daemon.healthfile"):
        assert not publisher.publish(LOADING)
        assert not publisher.publish(LOADING)
    settings.run_dir.unlink()
    settings.run_dir.mkdir()
    written = publisher.publish(LOADING)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(settings.health_path) in warnings[0].getMessage()
    assert written


def test_a_refused_write_is_retried_soon_until_the_file_is_on_disk(settings: Settings) -> None:
    settings.run_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.run_dir.write_text("a file where the folder should be")
    publisher = HealthPublisher(settings.health_path, DAEMON_PID, instance=INSTANCE)

    assert not publisher.publish(READY)
    refused_wait = publisher.next_check_s
    settings.run_dir.unlink()
    assert publisher.publish(READY)  # the same verdict: written because it is not on disk yet

    assert refused_wait == RETRY_S < CHECK_S == publisher.next_check_s
    assert read_health(settings.health_path) is not None


def test_a_deleted_file_is_rewritten_on_the_next_publish(publisher: HealthPublisher) -> None:
    assert publisher.publish(READY)
    publisher.path.unlink()

    assert publisher.publish(READY)  # nothing changed but the file is gone

    document = read_health(publisher.path)
    assert document is not None and document["result"] == "success"
    assert not publisher.publish(READY)  # and once it is there, not again


def test_a_file_replaced_by_another_writer_is_rewritten(publisher: HealthPublisher) -> None:
    assert publisher.publish(READY)
    publisher.path.write_text('{"result": "success", "pid": 1}')  # e.g. a previous run's

    assert publisher.publish(READY)

    document = read_health(publisher.path)
    assert document is not None and document["instance"] == {
        "boot_id": BOOT,
        "pid": DAEMON_PID,
        "started": STARTED,
    }


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
    ("started", "boot"),
    [(STARTED + 1, BOOT), (STARTED, "11111111-2222-3333-4444-555555555555")],
    ids=["restarted-under-the-same-pid", "written-before-the-last-boot"],
)
def test_health_exits_2_for_a_previous_run_under_the_same_pid(
    publisher: HealthPublisher, settings: Settings, tmp_path: Path, started: int, boot: str
) -> None:
    # As PID 1 of its container, every run of vllmd has the same pid; the run folder survived.
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, "vllmd", "run", started=started, boot=boot)
    publisher.publish(READY)

    code, out, err = run_health(settings, proc)

    assert (code, out) == (EXIT_NO_DAEMON, "")
    assert "the report is stale" in err


@pytest.mark.parametrize(
    "instance",
    [
        None,
        "not an object",
        {"boot_id": BOOT, "pid": DAEMON_PID},
        {"boot_id": BOOT, "pid": True, "started": STARTED},
        {"boot_id": BOOT, "pid": DAEMON_PID, "started": "1234567"},
        {"boot_id": 7, "pid": DAEMON_PID, "started": STARTED},
    ],
    ids=["missing", "not-an-object", "no-start", "bool-pid", "text-start", "number-boot"],
)
def test_health_exits_2_for_a_file_without_a_valid_instance(
    settings: Settings, tmp_path: Path, instance: object
) -> None:
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, "vllmd", "run")
    settings.run_dir.mkdir()
    document = {"result": "success", "message": "ready", "since": 1.0, "pid": DAEMON_PID}
    if instance is not None:
        document["instance"] = instance
    settings.health_path.write_text(json.dumps(document))

    code, _, err = run_health(settings, proc)

    assert code == EXIT_NO_DAEMON
    assert "no instance identity" in err


def test_unreadable_identity_matches_no_running_process(tmp_path: Path) -> None:
    unknown = Instance.of(DAEMON_PID, tmp_path / "empty-proc")

    assert unknown == Instance("", DAEMON_PID, -1)
    assert not unknown.is_running(fake_proc(tmp_path / "proc", DAEMON_PID, "vllmd", "run"))


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


def test_health_text_prints_the_download_as_a_second_line(
    publisher: HealthPublisher, settings: Settings, tmp_path: Path
) -> None:
    # given the old model serving while the new one's files come
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, "vllmd", "run")
    sentence = "Downloading Org/Model: 12.4 of 40.0 GB (31 %), 48 MB/s, about 10 min left."
    fetch: dict[str, JSON] = {"model": "Org/Model", "error": None, "message": sentence}
    publisher.publish(Verdict(READY.result, READY.message, None, {**READY.detail, "fetch": fetch}))
    # when `vllmd health --text` runs
    code, out, _ = run_health(settings, proc, text=True)
    # then the first line is the check's, exactly, and the second the download's
    assert (code, out) == (EXIT_SUCCESS, f"success: The vLLM API is ready\ndownload: {sentence}\n")


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


def test_start_time_is_stat_field_22_even_with_parentheses_in_the_name(tmp_path: Path) -> None:
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    proc = fake_proc(tmp_path / "proc", DAEMON_PID, "x", comm="a) (b c)")

    assert start_time(DAEMON_PID, proc) == STARTED
    assert start_time(DAEMON_PID + 1, proc) is None
    assert boot_id(proc) == BOOT


def test_this_process_identity_on_the_real_proc() -> None:
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()

    me = Instance.of(os.getpid())

    assert me.started == int(fields[19]) > 0
    assert me.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_health_exits_0_for_a_running_daemon_on_the_real_proc(
    settings: Settings, tmp_path: Path
) -> None:
    # a stand-in whose command line names vllmd, as `python -m vllmd run` does
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "vllmd", "run"],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not is_live_vllmd(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # exec takes a moment to replace the forked command line
        publisher = HealthPublisher(settings.health_path, child.pid)
        publisher.publish(READY)

        alive = run_health(settings, Path("/proc"))[0]
    finally:
        child.kill()
        child.wait(timeout=10)
    gone = run_health(settings, Path("/proc"))[0]

    assert (alive, gone) == (EXIT_SUCCESS, EXIT_NO_DAEMON)


def test_vllmd_health_imports_neither_anyio_nor_aiohttp() -> None:
    code = (
        "import sys, vllmd.daemon.healthfile; "
        "print(sorted(m for m in ('anyio', 'aiohttp', 'msgspec') if m in sys.modules))"
    )

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )

    assert done.stdout.strip() == "[]"


# -- the running daemon ----------------------------------------------------------------------------


def health_exit(volumes: Volumes) -> int:
    """``vllmd health`` as a separate process, as a container HEALTHCHECK or StartOS runs it."""
    return subprocess.run(
        [sys.executable, "-m", "vllmd", "health", "--run-dir", str(volumes.run)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=30,
    ).returncode


def test_a_previous_runs_success_is_replaced_and_stale_once_the_daemon_stops(
    volumes: Volumes, start_daemon: Callable[..., Daemon]
) -> None:
    # given: the run folder survived a restart, holding the last run's "success" as pid 1
    volumes.run.mkdir(parents=True)
    previous = {
        "result": "success",
        "message": "The vLLM API is ready",
        "since": 1.0,
        "pid": 1,
        "task": None,
        "detail": {},
        "instance": {"boot_id": boot_id(), "pid": 1, "started": 1},
    }
    volumes.health.write_text(json.dumps(previous))

    daemon = start_daemon()  # no model selected
    first = volumes.health_json()  # as soon as the daemon says it is up
    health = daemon.wait_health("failure")

    assert first is not None and first["instance"] == health["instance"]
    assert health["instance"] == {
        "boot_id": boot_id(),
        "pid": daemon.pid,
        "started": start_time(daemon.pid),
    }
    assert health_exit(volumes) == EXIT_UNHEALTHY
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert volumes.health_json() is not None  # the file stays, and says it is stale
    assert health_exit(volumes) == EXIT_NO_DAEMON


def test_a_deleted_health_file_is_written_again_by_the_daemon(
    volumes: Volumes, start_daemon: Callable[..., Daemon]
) -> None:
    start_daemon()
    volumes.health.unlink()

    health = wait_for(volumes.health_json, CHECK_S + 5, "health.json written again")

    assert health["result"] == "failure"
    assert health_exit(volumes) == EXIT_UNHEALTHY
