"""The watcher in-process: inotify, the fallback to polling, re-arming after a folder comes back."""

from __future__ import annotations

import errno
import inspect
import os
import shutil
import tomllib
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest
from packaging.requirements import Requirement

from vllmd.daemon.inotify import Inotify
from vllmd.daemon.watch import Watcher

pytestmark = pytest.mark.anyio


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _wakes_on_write(watcher: Watcher, woke: list[int], target: Path) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        before = len(woke)
        _write(target, "{}")
        with anyio.fail_after(5):
            while len(woke) == before:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


async def test_a_write_wakes_through_inotify(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    woke: list[int] = []
    watcher = Watcher((data,), ("store.json",), lambda: woke.append(1), force_polling=False)
    await _wakes_on_write(watcher, woke, data / "store.json")


async def test_without_inotify_it_falls_back_to_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def no_inotify() -> Inotify:
        raise OSError(errno.EMFILE, "inotify_init1: Too many open files")

    data = tmp_path / "data"
    data.mkdir()
    woke: list[int] = []
    watcher = Watcher((data,), ("store.json",), lambda: woke.append(1), force_polling=False,
                      inotify=no_inotify)  # fmt: skip
    await _wakes_on_write(watcher, woke, data / "store.json")
    assert "inotify unavailable" in caplog.text and "polling" in caplog.text


async def test_other_files_do_not_wake(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    woke: list[int] = []
    watcher = Watcher((data,), ("store.json",), lambda: woke.append(1), force_polling=False)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        (data / "models").mkdir()
        (data / "models" / "blob").write_bytes(b"x" * 1000)
        _write(data / "unrelated.json", "{}")
        _write(data / "store.json", "{}")  # a marker: once it woke us, the others were seen
        with anyio.fail_after(5):
            while not woke:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert len(woke) == 1


async def test_a_recreated_folder_is_watched_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = data / "store.json"
    seen: list[bool] = []  # at each wake: was the file there yet?
    watcher = Watcher((data,), ("store.json",), lambda: seen.append(store.exists()),
                      force_polling=False)  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        shutil.rmtree(data)  # the old watch dies with the folder
        data.mkdir()
        _write(store, "{}")
        # Only a watch re-armed on the new folder (from the parent's events) can wake us now,
        # either for the write itself or to say "look, you may have missed something".
        with anyio.fail_after(5):
            while True not in seen:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


def test_inotify_read_within_returns_the_rename_and_nothing_when_quiet(tmp_path: Path) -> None:
    # Given an inotify watch on a folder (the binding the benchmark also waits with)
    with Inotify() as inotify:
        inotify.add_folder(tmp_path)
        # When nothing happens, then a bounded wait returns no event
        assert inotify.read_within(0.01) == []
        # When a file is renamed into place, then the wait returns its name
        _write(tmp_path / "store.json", "{}")
        names = {event.name for event in inotify.read_within(5)}
        assert "store.json" in names
    assert inotify.fd == -1  # closed on leaving the block


def test_the_private_watchfiles_backend_keeps_the_signature_vllmd_calls() -> None:
    # Given watchfiles' private backend, which vllmd.daemon.watch calls by keyword
    from watchfiles._rust_notify import RustNotify

    # When its signatures are read (a build without them also fails here: inspect raises)
    made = inspect.signature(RustNotify)
    watch = inspect.signature(RustNotify.watch)
    # Then they still take the names vllmd passes, in a release inside pyproject's pin
    assert list(made.parameters) == [
        "watch_paths",
        "debug",
        "force_polling",
        "poll_delay_ms",
        "recursive",
        "ignore_permission_denied",
    ]
    assert list(watch.parameters)[-4:] == ["debounce_ms", "step_ms", "timeout_ms", "stop_event"]
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    pin = next(d for d in project["project"]["dependencies"] if d.startswith("watchfiles"))
    assert Requirement(pin).specifier.contains(version("watchfiles"))
