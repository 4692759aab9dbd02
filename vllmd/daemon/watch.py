"""Wake the reconciler when ``store.json`` or ``credentials.json`` may have changed.

Events carry no data that matters: the reconciler re-reads the files. The watcher only has to be
quick and never go deaf. Three facts shape it (DESIGN.md):

- an atomic rename shows as *added*/*deleted*, never *modified*: we match on names, not kinds;
- a watched folder that is deleted goes silent forever: the parents are watched too (without
  recursion, so a 100 GB download under ``models/`` never wakes us), and the watch is re-armed
  when a volume folder comes or goes;
- inotify may be unavailable (no kernel support, watch limit reached): we fall back to
  watchfiles' polling (``watchfiles.awatch``; also when ``WATCHFILES_FORCE_POLLING`` asks for it).
  Its poller compares whole-second mtimes, so a second write within the same second goes unseen:
  while polling, the watcher also wakes the reconciler every poll delay for its content check.

With inotify the descriptor sits in the event loop: no wake-up until the kernel has an event (see
:mod:`vllmd.daemon.inotify` for why not watchfiles' own loop). When polling, ``step_ms`` is how
often watchfiles' thread looks at what it collected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from vllmd.daemon.inotify import IN_DELETE_SELF, IN_IGNORED, IN_MOVE_SELF, IN_Q_OVERFLOW, Inotify

log = logging.getLogger(__name__)

POLL_DELAY_MS = 300
"""While polling: how often the poller looks at the folders, and the reconciler at the files."""


def polling_forced(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``WATCHFILES_FORCE_POLLING`` asks for polling, read by watchfiles' documented rule:
    set and not ``false``, ``disable`` or ``disabled`` (any case)."""
    value = environ.get("WATCHFILES_FORCE_POLLING", "")
    return value != "" and value.lower() not in ("false", "disable", "disabled")


class Watcher:
    """Watches ``folders`` (and their parents) for changes to ``names``; calls ``wake``.

    ``recheck_ms``: while polling, how often ``wake`` is called when the poller saw nothing (the
    reconciler's content check; tests make it long, so that only the poller's own detection
    wakes them).
    """

    def __init__(
        self,
        folders: Sequence[Path],
        names: Sequence[str],
        wake: Callable[[], None],
        *,
        step_ms: int = 30,
        debounce_ms: int = 50,
        recheck_ms: int = POLL_DELAY_MS,
        force_polling: bool | None = None,
        inotify: Callable[[], Inotify] = Inotify,
    ) -> None:
        self._folders = tuple(folders)
        self._inotify = inotify
        self._names = frozenset(names)
        self._wake = wake
        self._step_ms = step_ms
        self._debounce_ms = debounce_ms
        self._recheck_ms = recheck_ms
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
        # Imported here, in the fallback only: with inotify the daemon never loads it (4 MB of its
        # idle memory, issue 14). Its INFO line for every batch of changes is not ours to print.
        from watchfiles import Change, awatch

        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        paths = self._paths()
        stop = anyio.Event()
        changes = awatch(
            *paths,
            watch_filter=lambda change, path: self._matters(change is not Change.modified, path),
            debounce=self._debounce_ms,
            step=self._step_ms,
            stop_event=stop,
            rust_timeout=self._recheck_ms,
            yield_on_timeout=True,  # an empty batch: time for the content check
            force_polling=True,
            poll_delay_ms=POLL_DELAY_MS,
            recursive=False,
            ignore_permission_denied=True,
        )
        async with anyio.create_task_group() as tg, aclosing(changes):
            # awatch waits in a thread that a cancellation does not interrupt: the stop event
            # does, within one step (else a shutdown would wait for the recheck's timeout).
            tg.start_soon(_set_when_cancelled, stop)
            self._armed(task_status)  # its first look is a step away; the recheck covers it
            try:
                async for batch in changes:  # only what matters passes the filter
                    self._wake()  # a watched file or folder changed, or (empty) a recheck is due
                    came_or_went = any(Path(path) in self._folders for _, path in batch)
                    if came_or_went or any(not Path(p).is_dir() for p in paths):
                        break
            except FileNotFoundError:
                pass  # a folder vanished between the check and the watch: arm again
            finally:
                stop.set()
        # A cancellation that stopped awatch through the event ended it without raising: take it
        # here, not after a re-arm.
        await anyio.lowlevel.checkpoint_if_cancelled()

    def _matters(self, came_or_went: bool, path: str) -> bool:
        """Whether a change at ``path`` may wake us: a watched file, or a volume folder that came
        or went (not one whose mtime moved because a file in it changed)."""
        if Path(path) in self._folders:
            return came_or_went
        return Path(path).name in self._names


async def _set_when_cancelled(stop: anyio.Event) -> None:
    """Set ``stop`` when cancelled (or return once it is set)."""
    try:
        await stop.wait()
    finally:
        stop.set()
