"""Wake the reconciler when ``store.json`` or ``credentials.json`` may have changed.

Events carry no data that matters: the reconciler re-reads the files. The watcher only has to be
quick and never go deaf. Three facts shape it (DESIGN.md):

- an atomic rename shows as *added*/*deleted*, never *modified*: we match on names, not kinds;
- a watched folder that is deleted goes silent forever: the parents are watched too (without
  recursion, so a 100 GB download under ``models/`` never wakes us), and the watch is re-armed
  when a volume folder comes or goes;
- inotify may be unavailable (no kernel support, watch limit reached): we fall back to polling.

The watch runs in watchfiles' Rust thread; ``step_ms`` is how often that thread looks at what it
collected, the trade between reaction time and idle cost that the benchmark shows.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from watchfiles._rust_notify import RustNotify

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
    ) -> None:
        self._folders = tuple(folders)
        self._names = frozenset(names)
        self._wake = wake
        self._step_ms = step_ms
        self._debounce_ms = debounce_ms
        self._polling = polling_forced() if force_polling is None else force_polling

    def _paths(self) -> list[str]:
        paths: list[str] = []
        for folder in self._folders:
            for candidate in (folder, folder.parent):
                if candidate.is_dir() and str(candidate) not in paths:
                    paths.append(str(candidate))
        return paths

    def _arm(self) -> tuple[RustNotify, list[str]]:
        while True:
            paths = self._paths()
            try:
                return RustNotify(paths, False, self._polling, POLL_DELAY_MS, False, True), paths
            except FileNotFoundError:
                continue  # a folder vanished between the check and the watch: look again
            except (OSError, RuntimeError) as exc:
                if self._polling:
                    raise
                log.warning(
                    "file notifications unavailable (%s); polling every %d ms instead",
                    exc,
                    POLL_DELAY_MS,
                )
                self._polling = True

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

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; reports started once the first watch is armed."""
        started = False
        while True:
            watcher, paths = self._arm()
            log.debug("watching %s", paths)
            if not started:
                task_status.started()
                started = True
            else:
                self._wake()  # a folder came or went: what we missed meanwhile, look now
            stop = threading.Event()
            with watcher:
                try:
                    while True:
                        result = await anyio.to_thread.run_sync(
                            watcher.watch,
                            self._debounce_ms,
                            self._step_ms,
                            0,
                            stop,
                            abandon_on_cancel=True,
                        )
                        if not isinstance(result, set):
                            continue  # 'signal' or 'timeout': nothing to do
                        wake, rearm = self._relevant(result)
                        if wake:
                            self._wake()
                        if rearm or any(not Path(p).is_dir() for p in paths):
                            break
                finally:
                    stop.set()  # before closing: the abandoned thread returns within one step
