"""``vllmd run``'s first milliseconds (vllmd/early.py): a fresh health file and a missing key are
written before the daemon's modules are imported, exactly as the daemon would write them."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vllmd import early, options
from vllmd.apikey import KEY_ALPHABET, new_key
from vllmd.daemon.healthfile import HealthPublisher, Instance, read_health
from vllmd.guard import parse_key
from vllmd.settings import OPTIONS, Settings

ROOT = Path(__file__).resolve().parent.parent


STARTED: list[early.Early] = []
"""The records of this test's starts: their watches are stopped when it ends."""


@pytest.fixture(autouse=True)
def _own_signal_handlers() -> Iterator[None]:
    """early_start takes SIGTERM and SIGINT for the daemon: give the test process its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    while STARTED:
        STARTED.pop().stop_watching_key()
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _start(argv: list[str], environ: dict[str, str]) -> early.Early:
    record = early.early_start(argv, environ)
    STARTED.append(record)
    return record


def _run(tmp_path: Path, *extra: str, environ: dict[str, str] | None = None) -> early.Early:
    argv = ["run", "--public", str(tmp_path / "p"), "--run-dir", str(tmp_path / "r"), *extra]
    return _start(argv, environ or {})


def test_run_writes_a_loading_health_file_for_this_run(tmp_path: Path) -> None:
    # given a previous run's verdict in the run folder
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "health.json").write_text('{"result": "success"}')
    # when run starts
    _run(tmp_path)
    # then the file says loading, for this process, in the publisher's shape
    document = read_health(tmp_path / "r" / "health.json")
    assert document is not None
    assert document["result"] == "loading" and document["pid"] == os.getpid()
    assert document["message"] == early.STARTING_MESSAGE
    assert document["instance"] == {
        "boot_id": Instance.of(os.getpid()).boot_id,
        "pid": os.getpid(),
        "started": Instance.of(os.getpid()).started,
    }
    publisher = HealthPublisher(tmp_path / "other.json", os.getpid())
    from vllmd.core.health import Phase, Snapshot, evaluate

    publisher.publish(evaluate(Snapshot(phase=Phase.STARTING), 0.0, 0, 0))
    assert set(document) == set(json.loads((tmp_path / "other.json").read_text()))
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["health.json"]  # no temporaries


def test_a_missing_key_is_written_byte_for_byte_as_the_daemon_writes_it(tmp_path: Path) -> None:
    record = _run(tmp_path)
    path = tmp_path / "p" / "credentials.json"
    key, problem = parse_key(path.read_bytes())
    assert problem == "" and key == record.created_key
    assert path.read_text() == json.dumps({"apiKey": key}, indent=2) + "\n"  # pretty-printed
    assert path.stat().st_mode & 0o777 == 0o644


def test_new_keys_are_22_characters_of_the_alphabet_and_differ() -> None:
    keys = {new_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(len(k) == 22 and set(k) <= set(KEY_ALPHABET) for k in keys)
    assert set("".join(keys)) == set(KEY_ALPHABET)  # 4,400 draws reach all 62


@pytest.mark.parametrize("content", [b'{"apiKey": "AAAAAAAAAAAAAAAAAAAAAA"}', b"not json", None])
def test_an_existing_key_file_is_left_to_the_daemon(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "p" / "credentials.json"
    path.parent.mkdir()
    if content is None:
        path.mkdir()  # not even a file: the daemon moves it aside
    else:
        path.write_bytes(content)
    _run(tmp_path)
    assert path.is_dir() if content is None else path.read_bytes() == content


@pytest.mark.parametrize(
    "argv",
    [
        ["health"],
        ["run", "--help"],
        ["run", "--pub", "/elsewhere"],  # argparse would take the abbreviation: it decides
        ["run", "--public"],
        ["run", "--public="],
    ],
)
def test_other_commands_and_any_doubt_write_nothing(tmp_path: Path, argv: list[str]) -> None:
    environ = {"VLLMD_PUBLIC": str(tmp_path / "p"), "VLLMD_RUN_DIR": str(tmp_path / "r")}
    record = _start(argv, environ)
    assert list(tmp_path.iterdir()) == []
    assert record.created_key is None


def test_the_flag_beats_the_environment(tmp_path: Path) -> None:
    environ = {"VLLMD_PUBLIC": str(tmp_path / "env"), "VLLMD_RUN_DIR": str(tmp_path / "r")}
    _start(["run", f"--public={tmp_path / 'flag'}"], environ)
    assert (tmp_path / "flag" / "credentials.json").is_file()
    assert not (tmp_path / "env").exists()
    _start(["run", "--data", "/d"], environ)
    assert (tmp_path / "env" / "credentials.json").is_file()


def test_the_early_spellings_are_the_settings() -> None:
    defaults = Settings()
    for spelling, dest, default in (
        (options.PUBLIC, "public", defaults.public),
        (options.RUN_DIR, "run_dir", defaults.run_dir),
    ):
        assert OPTIONS[dest].spelling is spelling
        assert (spelling.flag, spelling.env, Path(spelling.default)) == (
            OPTIONS[dest].flags[0],
            OPTIONS[dest].env,
            default,
        )


def test_the_early_files_are_written_before_any_other_module_is_imported(tmp_path: Path) -> None:
    # The cold-start target (issue 14) rests on this: the key is on disk at the cost of a bare
    # interpreter and a few standard modules, not of the daemon's imports.
    code = (
        "import os, sys\n"
        "before = set(sys.modules)\n"
        "from vllmd.early import early_start\n"
        f"early_start(['run', '--public', {str(tmp_path / 'p')!r}, '--run-dir', "
        f"{str(tmp_path / 'r')!r}], os.environ)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    imported = json.loads(done.stdout.replace("'", '"'))
    ours = [name for name in imported if name.split(".")[0] == "vllmd"]
    assert ours == ["vllmd", "vllmd.apikey", "vllmd.core", "vllmd.core.errors", "vllmd.early",
                    "vllmd.options", "vllmd.process", "vllmd.process.proc", "vllmd.state",
                    "vllmd.state.atomicfile", "vllmd.state.readfile"]  # fmt: skip
    # the rest is the standard library only (signal, threading and what they need): no
    # dependency, no typing, no pathlib
    others = [name for name in imported if name.split(".")[0] != "vllmd"]
    assert all(name.split(".")[0] in sys.stdlib_module_names for name in others), others
    assert not {"typing", "pathlib", "msgspec", "anyio", "logging"} & set(others)
    assert (tmp_path / "p" / "credentials.json").is_file()


def test_the_daemon_says_it_wrote_the_key_that_was_written_early(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vllmd.daemon.prepare import ensure_key_logged

    record = _run(tmp_path)
    settings = Settings(data=tmp_path / "d", public=tmp_path / "p", run_dir=tmp_path / "r")
    caplog.set_level(logging.INFO)
    ensure_key_logged(settings, record)
    ensure_key_logged(settings, record)  # the same key again: nothing new to say
    said = [r.getMessage() for r in caplog.records if "API key" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("wrote a new API key ")
    key = (tmp_path / "p" / "credentials.json").read_text()
    assert key.split('"')[3] not in said[0]  # masked, as every key in a log line


def test_a_stop_signal_during_the_imports_is_remembered_not_fatal(tmp_path: Path) -> None:
    # given vllmd run on fresh volumes, signalled the moment its key is on disk (it is still
    # importing its modules then); as PID 1 an unhandled SIGTERM would simply be dropped
    argv = [sys.executable, "-m", "vllmd", "run", "--data", str(tmp_path / "d"), "--public",
            str(tmp_path / "p"), "--run-dir", str(tmp_path / "r"), "--no-ldconfig",
            "--vllm", "/nonexistent/vllm"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    key = tmp_path / "p" / "credentials.json"
    deadline = time.monotonic() + 30
    while not key.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    # then it was remembered and acted on once the daemon was up: a clean stop, exit 0
    assert proc.returncode == 0, err
    assert "received SIGTERM during start-up" in err


def test_a_key_deleted_while_the_daemon_imports_is_written_again_at_once(tmp_path: Path) -> None:
    # given the early key on disk, the daemon still importing (its watcher not armed yet)
    record = _run(tmp_path)
    path = tmp_path / "p" / "credentials.json"
    first = path.read_bytes()
    # when a dependent deletes it; then a new key is there within the contract's 100 ms
    path.unlink()
    deadline = time.monotonic() + 0.1 + 1.0  # 1 s of slack for a loaded machine
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    again = path.read_bytes()
    assert again != first and parse_key(again)[0] == record.created_key
    # when the daemon's watcher is armed, the start-up watch ends: nothing writes behind it
    record.stop_watching_key()
    time.sleep(2 * early.KEY_WATCH_S)  # a round of the watch that had begun is over
    path.unlink()
    time.sleep(10 * early.KEY_WATCH_S)
    assert not path.exists()


def test_a_key_an_earlier_package_left_in_store_json_is_left_to_the_daemon(tmp_path: Path) -> None:
    # given a store that holds a key to adopt (Start9's earlier packages kept it there), no key
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "store.json").write_text('{\n  "apiKey": "q7WbX2mZ9kLpR4tY8vNc3d"\n}')
    # when run starts
    record = _run(tmp_path, f"--data={tmp_path / 'd'}")
    # then no fresh key is written, which would break the dependents that hold the old one
    assert not (tmp_path / "p" / "credentials.json").exists() and record.created_key is None
    assert (tmp_path / "r" / "health.json").is_file()
    # and a store without one does not hold the key back
    record.stop_watching_key()  # (the first start's watch would write it otherwise)
    (tmp_path / "d" / "store.json").write_text('{"serveArgs": ["org/model"]}')
    record = _run(tmp_path, f"--data={tmp_path / 'd'}")
    assert parse_key((tmp_path / "p" / "credentials.json").read_bytes())[0] == record.created_key
