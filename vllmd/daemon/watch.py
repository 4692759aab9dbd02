"""Wake the reconciler when ``store.json`` or ``credentials.json`` may have changed.

Events carry no data that matters: the reconciler re-reads the files. The watcher only has to be
quick and never go deaf. Three facts shape it (DESIGN.md):

- an atomic rename shows as *added*/*deleted*, never *modified*: we match on names, not kinds;
- a watched folder that is deleted goes silent forever: the parents are watched too (without
  recursion, so a 100 GB download under ``models/`` never wakes us), and the watch is re-armed
  when a volume folder comes or goes;
- inotify may be unavailable (no kernel support, watch limit reached): we fall back to
  watchfiles' polling (also when ``WATCHFILES_FORCE_POLLING`` asks for it).

With inotify the descriptor sits in the event loop: no wake-up until the kernel has an event (see
:mod:`vllmd.daemon.inotify` for why not watchfiles' own loop). When polling, ``step_ms`` is how
often watchfiles' thread looks at what it collected.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from vllmd.daemon.inotify import IN_DELETE_SELF, IN_IGNORED, IN_MOVE_SELF, IN_Q_OVERFLOW, Inotify

log = logging.getLogger(__name__)

POLL_DELAY_MS = 300


def polling_forced(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``WATCHFILES_FORCE_POLLING`` asks for polling, as watchfiles itself reads it."""
    value = environ.get("WATCHFILES_FORCE_POLLING", "")
    return value.lower() not in ("", "0", "false", "disable")


class Watcher:
    """Watches ``folders`` (and their parents) for changes to ``names``; calls ``wake``."""

    def __init__(
        self,
        folders: Sequence[Path],
        names: Sequence[str],
        wake: Callable[[], None],
        *,
        step_ms: int = 30,
        debounce_ms: int = 50,
        force_polling: bool | None = None,
        inotify: Callable[[], Inotify] = Inotify,
    ) -> None:
        self._folders = tuple(folders)
        self._inotify = inotify
        self._names = frozenset(names)
        self._wake = wake
        self._step_ms = step_ms
        self._debounce_ms = debounce_ms
        self._polling = polling_forced() if force_polling is None else force_polling
        self._started = False

    def _paths(self) -> list[str]:
        paths: list[str] = []
        for folder in self._folders:
            for candidate in (folder, folder.parent):
                if candidate.is_dir() and str(candidate) not in paths:
                    paths.append(str(candidate))
        return paths

    def _armed(self, task_status: TaskStatus[None]) -> None:
        if not self._started:
            self._started = True
            task_status.started()
        else:
            self._wake()  # re-armed after a folder came or went: look at what we missed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; reports started once the first watch is armed."""
        while True:
            if self._polling:
                await self._poll_round(task_status)
                continue
            try:
                notify = self._inotify()
            except OSError as exc:
                log.warning("inotify unavailable (%s); polling every %d ms", exc, POLL_DELAY_MS)
                self._polling = True
                continue
            try:
                await self._inotify_round(notify, task_status)
            except OSError as exc:  # the watch limit, typically: ENOSPC
                log.warning("inotify failed (%s); polling every %d ms", exc, POLL_DELAY_MS)
                self._polling = True
            finally:
                notify.close()

    async def _inotify_round(self, notify: Inotify, task_status: TaskStatus[None]) -> None:
        """Watch with inotify until a volume folder comes or goes (then return to re-arm)."""
        watches: dict[int, Path] = {}
        for path in self._paths():
            try:
                watches[notify.add_folder(path)] = Path(path)
            except FileNotFoundError:
                return  # vanished between the check and the watch: arm again
        self._armed(task_status)
        while True:
            await anyio.wait_readable(notify.fd)
            wake = rearm = False
            for event in notify.read():
                folder = watches.get(event.wd)
                if event.mask & IN_Q_OVERFLOW:
                    wake = rearm = True  # events were lost: look, and start afresh
                elif folder is None:
                    continue
                elif event.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    wake = rearm = True
                elif folder / event.name in self._folders:
                    wake = rearm = True  # a volume folder created, deleted or moved
                elif folder in self._folders and event.name in self._names:
                    wake = True
            if wake:
                self._wake()
            if rearm:
                return

    async def _poll_round(self, task_status: TaskStatus[None]) -> None:
        """Watch with watchfiles' polling until a volume folder comes or goes."""
        # watchfiles' backend, not its public ``awatch``: awatch runs the backend's wait in a
        # thread that cannot be abandoned on cancellation (a stop would wait up to its timeout
        # for the thread) and logs every batch of changes at INFO. The private class is called
        # by keyword, and pyproject pins the watchfiles releases it is known to have this
        # signature in; a test fails if the signature moves. Imported here, in the fallback
        # only: with inotify the daemon never loads it (4 MB of its idle memory, issue 14).
        from watchfiles._rust_notify import RustNotify

        while True:
            paths = self._paths()
            try:
                watcher = RustNotify(
                    watch_paths=paths,
                    debug=False,
                    force_polling=True,
                    poll_delay_ms=POLL_DELAY_MS,
                    recursive=False,
                    ignore_permission_denied=True,
                )
                break
            except FileNotFoundError:
                continue
        self._armed(task_status)
        stop = threading.Event()
        with watcher:
            try:
                while True:
                    result = await anyio.to_thread.run_sync(
                        partial(
                            watcher.watch,
                            debounce_ms=self._debounce_ms,
                            step_ms=self._step_ms,
                            timeout_ms=POLL_DELAY_MS,
                            stop_event=stop,
                        ),
                        abandon_on_cancel=True,
                    )
                    if result == "timeout":
                        # The poller compares whole-second mtimes: a second write within the
                        # same second goes unseen. Let the reconciler's content check look.
                        self._wake()
                        continue
                    if not isinstance(result, set):
                        continue  # 'signal': nothing to do
                    wake, rearm = self._relevant(result)
                    if wake:
                        self._wake()
                    if rearm or any(not Path(p).is_dir() for p in paths):
                        return
            finally:
                stop.set()  # before closing: the abandoned thread returns within one step

    def _relevant(self, changes: set[tuple[int, str]]) -> tuple[bool, bool]:
        """(wake, re-arm): whether a watched file may have changed; whether a folder came/went."""
        wake = rearm = False
        folders = {str(f) for f in self._folders}
        for _, path in changes:
            if path in folders:
                wake = rearm = True
            elif Path(path).name in self._names:
                wake = True
        return wake, rearm
