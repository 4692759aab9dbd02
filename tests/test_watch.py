"""The watcher in-process: inotify, the fallback to polling, re-arming after a folder comes back."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import anyio
import pytest

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


NEVER_MS = 60_000
"""A recheck period far beyond every deadline here: only the poller's own detection wakes."""


async def test_without_inotify_it_falls_back_to_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given: no inotify, and no periodic recheck within the test's deadline
    def no_inotify() -> Inotify:
        raise OSError(errno.EMFILE, "inotify_init1: Too many open files")

    data = tmp_path / "data"
    data.mkdir()
    woke: list[int] = []
    watcher = Watcher((data,), ("store.json",), lambda: woke.append(1), force_polling=False,
                      inotify=no_inotify, recheck_ms=NEVER_MS)  # fmt: skip
    # when: store.json is written; then: the poller saw it, and a stop did not wait for the
    # recheck's timeout (awatch's thread is told to stop)
    began = time.monotonic()
    await _wakes_on_write(watcher, woke, data / "store.json")
    assert time.monotonic() - began < 5
    assert "inotify unavailable" in caplog.text and "polling" in caplog.text


async def test_while_polling_the_reconciler_is_woken_every_recheck_for_its_content_check(
    tmp_path: Path,
) -> None:
    # given: a polling watcher (the poller misses a second write within one second)
    data = tmp_path / "data"
    data.mkdir()
    woke: list[float] = []
    watcher = Watcher((data,), ("store.json",), lambda: woke.append(time.monotonic()),
                      force_polling=True, recheck_ms=50)  # fmt: skip
    # when: nothing changes; then: it still wakes the reconciler, every recheck
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        with anyio.fail_after(5):
            while len(woke) < 3:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
async def test_other_files_do_not_wake(tmp_path: Path, polling: bool) -> None:
    data = tmp_path / "data"
    data.mkdir()
    woke: list[int] = []
    watcher = Watcher((data,), ("store.json",), lambda: woke.append(1), force_polling=polling,
                      recheck_ms=NEVER_MS)  # fmt: skip

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


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
async def test_a_recreated_folder_is_watched_again(tmp_path: Path, polling: bool) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = data / "store.json"
    seen: list[bool] = []  # at each wake: was the file there yet?
    watcher = Watcher((data,), ("store.json",), lambda: seen.append(store.exists()),
                      force_polling=polling, recheck_ms=NEVER_MS)  # fmt: skip
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
