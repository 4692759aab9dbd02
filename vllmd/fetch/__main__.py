"""``python -m vllmd.fetch --models DIR [--margin-bytes N] TARGET...``: fetch a launch's files.

TARGET is ``role:repo_id[@revision]`` (:func:`vllmd.core.fetchplan.target_arg`). The worker plans
every target (sizes and commits from the hub's metadata), refuses before a byte moves when what
is left to fetch does not fit in the free space of ``DIR`` less a margin, then fetches file by
file into the HuggingFace cache at ``DIR``, records each complete target
(:mod:`vllmd.state.fetched`), and exits 0. Its stdout carries only the event lines of
:mod:`vllmd.core.fetchstate` (anything else a library prints goes to stderr); a failure is one
``error`` line and exit 1. The environment is the launch's: ``HF_TOKEN``, ``HF_ENDPOINT``, proxies.

A hub that cannot be reached is not the end when an earlier download (vLLM's own, before vllmd
fetched) left every file vLLM reads in the cache: those files are recorded as the complete plan
(:func:`vllmd.fetch.plan.plan_from_cache`) and a warning says so, so that such a model starts
offline instead of waiting for the hub.

The margin (default 1 GiB, ``--margin-bytes``) keeps room on the data volume for what vLLM and
vllmd write beside the weights: the compile caches, logs, ``store.json``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import disable_progress_bars

from vllmd.core.errors import VllmdError
from vllmd.core.fetchplan import Target, parse_target
from vllmd.core.fetchstate import DoneEvent, ErrorEvent, Event, PlanEvent, ProgressEvent
from vllmd.core.fetchstate import encode_event as encode
from vllmd.core.units import human_bytes
from vllmd.fetch.cache import Planned, bytes_on_disk, is_cached, remove_stale_partials
from vllmd.fetch.download import fetch_file
from vllmd.fetch.failures import classify
from vllmd.fetch.plan import plan_from_cache, plan_target
from vllmd.state.fetched import write_record

DEFAULT_MARGIN_BYTES = 1 << 30
PROGRESS_EVERY_S = 0.5
log = logging.getLogger("vllmd.fetch")
FILES_AT_ONCE = 8
"""Files downloaded at once: snapshot_download's default."""


class Events:
    """The event lines, on the stdout this process was given; fd 1 itself then points to stderr,
    so that nothing else (a library's print, a Rust log line) can reach the event stream."""

    def __init__(self) -> None:
        self._fd = os.dup(1)
        os.dup2(2, 1)
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        """Write one event line."""
        data = encode(event)
        with self._lock:
            while data:
                data = data[os.write(self._fd, data) :]


class Meter:
    """Reports the bytes of the plan on disk every :data:`PROGRESS_EVERY_S` while they grow."""

    def __init__(self, events: Events, models: Path, plan: Sequence[Planned], done: int) -> None:
        self._events = events
        self._models = models
        self._plan = plan
        self._total = sum(p.file.size for p in plan)
        self._last = done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fetch-meter", daemon=True)

    def __enter__(self) -> Meter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            done = bytes_on_disk(self._models, self._plan)
            if done != self._last:
                self._last = done
                self._events.emit(ProgressEvent(done=done, total=self._total))


def _unique(planned: list[Planned]) -> list[Planned]:
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for p in planned:
        key = (p.file.repo_id, p.file.commit, p.file.path)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


class NoSpace(VllmdError):
    """Raised when what remains to fetch does not fit in the free space less the margin."""

    def __init__(self, repo_id: str, needed: int, free: int, margin: int) -> None:
        super().__init__(
            f"Not enough free space on the data volume for {repo_id}: {human_bytes(needed)} "
            f"needed (with {human_bytes(margin)} kept spare), {human_bytes(free)} free.",
            'Run the "Delete Model Cache" action to remove models you no longer use, or free '
            "space on the data volume.",
        )
        self.needed = needed
        self.free = free


class Worker:
    """One run: plan, check the disk, fetch, record. ``current`` is the repository worked on."""

    def __init__(self, events: Events, models: Path, margin: int) -> None:
        self.events = events
        self.models = models
        self.margin = margin
        self.current = ""

    def _no_space(self, plan: Sequence[Planned]) -> NoSpace:
        total = sum(p.file.size for p in plan)
        needed = total - bytes_on_disk(self.models, plan) + self.margin
        return NoSpace(self.current, needed, shutil.disk_usage(self.models).free, self.margin)

    def from_cache(self, targets: Sequence[Target]) -> bool:
        """Record ``targets`` complete from the cache alone, when every one of them is there."""
        local = [found for t in targets if (found := plan_from_cache(self.models, t)) is not None]
        if len(local) != len(targets):
            return False
        for target, (commit, files) in zip(targets, local, strict=True):
            write_record(self.models, target, commit, files)
            log.warning(
                "the hub cannot be reached; %s@%s is whole in the cache (an earlier download), "
                "so it is used as it is",
                target.repo_id,
                commit[:12],
            )
        total = sum(size for _, files in local for _, size in files)
        count = sum(len(files) for _, files in local)
        self.events.emit(PlanEvent(total=total, present=total, files=count))
        self.events.emit(DoneEvent(total=total))
        return True

    def run(self, targets: Sequence[Target]) -> None:
        """Fetch ``targets``; raises what went wrong."""
        api = HfApi()
        per_target: list[tuple[str, list[Planned]]] = []
        try:
            for target in targets:
                self.current = target.repo_id
                per_target.append(plan_target(api, self.models, target, fetch_file))
        except Exception as exc:
            if classify(exc, self.current)[0] != "network" or not self.from_cache(targets):
                raise
            return
        plan = _unique([p for _, files in per_target for p in files])
        remove_stale_partials(self.models, {p.file.repo_id for p in plan})
        total = sum(p.file.size for p in plan)
        present = bytes_on_disk(self.models, plan)
        self.current = targets[0].repo_id
        if total - present + self.margin > shutil.disk_usage(self.models).free:
            raise self._no_space(plan)
        self.events.emit(PlanEvent(total=total, present=present, files=len(plan)))
        missing = [p for p in plan if not is_cached(self.models, p)]
        with Meter(self.events, self.models, plan, present):
            # Several files at once, as snapshot_download does: one HTTP stream per file is
            # often slower than the link. The pool is never joined on failure: main() exits the
            # process, and the downloads in flight keep their partial files.
            pool = ThreadPoolExecutor(FILES_AT_ONCE, thread_name_prefix="fetch")
            running = {pool.submit(fetch_file, self.models, p): p for p in missing}
            for future in as_completed(running):
                self.current = running[future].file.repo_id
                try:
                    future.result()
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise self._no_space(plan) from exc
                    raise
            pool.shutdown()
        for target, (commit, files) in zip(targets, per_target, strict=True):
            # A target with nothing vLLM reads is recorded too: complete, with no file.
            paths = [(p.file.path, p.file.size) for p in files]
            write_record(self.models, target, commit, paths)
        self.events.emit(DoneEvent(total=total))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker; 0 when every target is fetched and recorded, 1 on an error line."""
    parser = argparse.ArgumentParser(prog="python -m vllmd.fetch", description=__doc__)
    parser.add_argument("--models", type=Path, required=True, help="the HuggingFace cache folder")
    parser.add_argument("--margin-bytes", type=int, default=DEFAULT_MARGIN_BYTES)
    parser.add_argument("targets", nargs="+", type=parse_target, metavar="TARGET")
    options = parser.parse_args(argv)
    events = Events()
    disable_progress_bars()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    worker = Worker(events, options.models, options.margin_bytes)
    worker.current = options.targets[0].repo_id
    try:
        options.models.mkdir(parents=True, exist_ok=True)
        worker.run(options.targets)
    except NoSpace as full:
        events.emit(ErrorEvent("disk-full", str(full), needed=full.needed, free=full.free))
        return 1
    except Exception as exc:
        kind, message = classify(exc, worker.current)
        events.emit(ErrorEvent(kind, message))
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stderr.flush()
    # Without waiting for downloads still in flight after a failure (their threads cannot be
    # stopped): the events are written unbuffered, the partial files stay for the next run.
    os._exit(code)
