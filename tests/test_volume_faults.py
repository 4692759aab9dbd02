"""Volumes and folders that change or fail under the daemon (issue 11, class 4).

``DATA`` or ``DATA/models`` replaced by a file, ``RUN_DIR`` removed, a full disk, a read-only
volume: the daemon never exits for them; it says what is wrong, and heals when the volume does.
Faults that need root (a tiny tmpfs for a full disk, a read-only bind mount) run where the tests
run as root and are skipped with the reason elsewhere; every mount is undone by its fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.actions_support import run_vllmd
from tests.conftest import Volumes, wait_for


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode})")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points a test made; each is unmounted at teardown, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a read-only bind mount needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount program")
    made: list[Path] = []
    yield made
    for path in reversed(made):
        _umount(path)


@pytest.fixture
def tiny_tmpfs(mounts: list[Path]) -> Callable[[Path, str], None]:
    """Mount a tmpfs of ``size`` (``64k``) on ``path``."""

    def mount(path: Path, size: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        mounts.append(path)

    return mount


@pytest.fixture
def read_only(mounts: list[Path]) -> Callable[[Path], Callable[[], None]]:
    """Make ``path`` read-only with a bind mount; returns what makes it writable again."""

    def bind(path: Path) -> Callable[[], None]:
        path.mkdir(parents=True, exist_ok=True)
        _mount("--bind", str(path), str(path))
        mounts.append(path)
        _mount("-o", "remount,bind,ro", str(path))

        def writable() -> None:
            _mount("-o", "remount,bind,rw", str(path))

        return writable

    return bind


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return filler


def _complaint(log: str, path: str) -> bool:
    """Whether ``log`` has a warning or an error that names ``path``."""
    return any(line.startswith(("WARNING", "ERROR")) and path in line for line in log.splitlines())


@pytest.mark.parametrize("which", ["data", "data/models"])
def test_a_volume_folder_replaced_by_a_file_is_logged_and_healed(
    volumes: Volumes, start_daemon, which: str
) -> None:
    # given: a daemon serving a model
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    daemon.wait_health("success")
    # when: the folder becomes a file (and, for DATA/models, a restart is due)
    folder = volumes.root / which
    aside = volumes.root / "aside"
    folder.rename(aside)
    folder.write_text("not a folder")
    if which == "data/models":
        volumes.set_args(*volumes.standin_args("org/other"))
    # then: the daemon says what is wrong and lives on
    wait_for(lambda: _complaint(daemon.stderr(), str(folder)), 10, f"a complaint about {which}")
    assert daemon.proc.poll() is None
    # when: the folder comes back, with a new configuration
    folder.unlink()
    aside.rename(folder)
    volumes.set_args(*volumes.standin_args("org/other"))
    # then: the new configuration runs
    wait_for(lambda: any(s["argv"][2] == "org/other" for s in volumes.starts()), 20, "restart")
    daemon.wait_health("success")
    assert daemon.proc.poll() is None


def test_a_removed_run_dir_is_rebuilt_before_the_next_launch(
    volumes: Volumes, start_daemon
) -> None:
    # given: a daemon with the guard (the default), serving a model
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    daemon.wait_health("success")
    guard = volumes.run / "pythonpath" / "vllmd" / "guard.py"
    assert guard.is_file()
    # when: the run folder is removed, and vLLM is restarted
    shutil.rmtree(volumes.run)
    volumes.set_args(*volumes.standin_args("org/other"))
    # then: the guard module is back before that vLLM starts, and health is back on disk
    wait_for(lambda: len(volumes.starts()) >= 2, 20, "the restart")
    assert guard.is_file()
    daemon.wait_health("success")


def test_a_deleted_health_file_is_written_again(volumes: Volumes, start_daemon) -> None:
    # given: a daemon that published its health, with nothing about to change
    volumes.set_args(*volumes.standin_args())
    daemon = start_daemon()
    daemon.wait_health("success")
    # when: the file is deleted
    volumes.health.unlink()
    # then: it is on disk again, with the same verdict
    daemon.wait_health("success", timeout=15)


def test_a_full_run_dir_gets_its_health_once_there_is_room(
    volumes: Volumes, start_daemon, tiny_tmpfs: Callable[[Path, str], None]
) -> None:
    # given: a run folder on a tiny file system that is full
    tiny_tmpfs(volumes.run, "64k")
    filler = _fill(volumes.run)
    volumes.set_args(*volumes.standin_args())
    # when: the daemon starts and vLLM becomes ready while no health can be written
    daemon = start_daemon()
    wait_for(lambda: "No space left" in daemon.stderr(), 10, "the full disk logged")
    assert daemon.proc.poll() is None
    # when: room is made
    filler.unlink()
    # then: the health is on disk, without any change of state to trigger it
    daemon.wait_health("success", timeout=15)


def test_a_read_only_public_volume_is_logged_and_the_key_written_once_writable(
    volumes: Volumes, start_daemon, read_only: Callable[[Path], Callable[[], None]]
) -> None:
    # given: a public volume that cannot be written, and no key yet
    writable = read_only(volumes.public)
    # when: the daemon starts
    daemon = start_daemon(wait_ready=False)
    wait_for(lambda: "Read-only file system" in daemon.stderr(), 10, "the read-only volume")
    # then: it lives on, and writes the key as soon as it can
    assert daemon.proc.poll() is None
    writable()
    wait_for(lambda: volumes.credentials.is_file(), 10, "the key written")
    assert len(volumes.key()) == 22


def test_set_model_on_a_full_data_volume_fails_cleanly(
    tmp_path: Path, tiny_tmpfs: Callable[[Path, str], None]
) -> None:
    # given: a data volume that is full, holding a valid store
    data = tmp_path / "data"
    tiny_tmpfs(data, "64k")
    (data / "store.json").write_text(json.dumps({"serveArgs": ["org/old"]}))
    _fill(data)
    # when: Set Model writes a new store
    run = run_vllmd(
        "action", "set-model", "--data", str(data), "--public", str(tmp_path / "public"),
        "--run-dir", str(tmp_path / "run"), "--custom", "org/new",
    )  # fmt: skip
    # then: a clear error, and the old store intact (no half-written file)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "space" in run.stderr.lower()
    assert json.loads((data / "store.json").read_text()) == {"serveArgs": ["org/old"]}
