"""``vllmd run`` against hostile files: it keeps running, keeps vLLM, and says what and where.

Issue 11, classes 1 and 2, black-box: content that is not merely invalid JSON (nested thousands
deep, a NUL in an argument, a name with a trailing newline) and paths that are not regular files
(a FIFO, a device, a dangling symlink, a loop) in ``store.json`` or ``credentials.json``.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Volumes, pid_alive, wait_for


def _deep(path: Path) -> None:
    path.write_text('{"serveArgs": ["org/x"], "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _nul_arg(path: Path) -> None:
    path.write_text(json.dumps({"serveArgs": ["org/x", "--seed", "1\u00002"]}))


def _nul_env(path: Path) -> None:
    doc = {"serveArgs": ["org/x"], "serveEnv": [{"name": "HF_TOKEN", "value": "a\u0000b"}]}
    path.write_text(json.dumps(doc))


def _newline_name(path: Path) -> None:
    doc = {"serveArgs": ["org/x"], "serveEnv": [{"name": "HF_TOKEN\n", "value": "v"}]}
    path.write_text(json.dumps(doc))


def _swap_in(path: Path, make: Callable[[Path], None]) -> None:
    """Put what ``make`` creates in ``path``'s place in one rename: the file is never missing
    (a missing key file is simply written again, which would race the hostile one)."""
    staged = path.with_name(f".{path.name}.staged")
    make(staged)
    os.replace(staged, path)


def _fifo(path: Path) -> None:
    _swap_in(path, os.mkfifo)


def _device(path: Path) -> None:
    _swap_in(path, lambda staged: staged.symlink_to("/dev/zero"))


def _dangling(path: Path) -> None:
    _swap_in(path, lambda staged: staged.symlink_to("store-that-is-gone.json"))


def _loop(path: Path) -> None:
    path.with_name("other.json").symlink_to(path.name)
    _swap_in(path, lambda staged: staged.symlink_to("other.json"))


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_deep, "nested too deeply"),
        (_nul_arg, "$.serveArgs[2] holds a NUL character"),
        (_nul_env, "$.serveEnv[0].value (of HF_TOKEN) holds a NUL character"),
        (_newline_name, "$.serveEnv[0].name"),
        (_fifo, "a FIFO (named pipe)"),
        (_device, "a device"),
        (_dangling, "'store-that-is-gone.json', which does not exist"),
        (_loop, "a loop of symbolic links"),
    ],
    ids=["deep", "nul-arg", "nul-env", "newline-name", "fifo", "device", "dangling", "loop"],
)
def test_a_hostile_store_keeps_the_last_good_vllm_and_says_what_and_where(
    volumes: Volumes, start_daemon, make: Callable[[Path], None], says: str
) -> None:
    # given: a daemon serving a good store
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    daemon.wait_health("success")
    pid = volumes.starts()[0]["pid"]
    # when: store.json becomes hostile
    make(volumes.store)
    # then: the daemon logs what is wrong and where, keeps the running vLLM, and stays
    # responsive: a deleted key is written again, and SIGTERM stops everything
    daemon.wait_log(says)
    assert str(volumes.store) in next(ln for ln in daemon.stderr().splitlines() if says in ln)
    assert pid_alive(pid) and len(volumes.starts()) == 1
    key = volumes.key()
    volumes.credentials.unlink()
    wait_for(lambda: volumes.credentials.is_file() and volumes.key() != key, 5, "a new key")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert not pid_alive(pid)


@pytest.mark.parametrize(
    "make", [_fifo, _device, _dangling, _loop], ids=["fifo", "device", "dangling", "loop"]
)
def test_a_hostile_key_file_is_moved_aside_and_replaced_while_running(
    volumes: Volumes, start_daemon, make: Callable[[Path], None]
) -> None:
    # given: a running daemon with its key
    daemon = start_daemon()
    key = volumes.key()
    # when: the key file becomes something that holds no key
    make(volumes.credentials)
    # then: a regular file with a new key takes its place, and the daemon still obeys SIGTERM
    wait_for(
        lambda: (
            volumes.credentials.is_file()
            and not volumes.credentials.is_symlink()
            and volumes.key() != key
        ),
        5,
        "a new key in a regular file",
    )
    assert list(volumes.public.glob("credentials.json.invalid-*"))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
