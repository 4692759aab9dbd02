"""The first milliseconds of ``vllmd run``: a fresh health file and the API key, before any import.

Dependents wait for ``PUBLIC/credentials.json`` and StartOS reads ``RUN_DIR/health.json`` from the
moment the container starts, while the daemon's own modules take a tenth of a second to import.
So ``python -m vllmd run`` (and the ``vllmd`` command) first calls :func:`early_start`, which loads
the standard library's ``signal`` and ``threading`` and small modules of vllmd that import the
built-in ones only (the options' spellings, the key's generator, the atomic write, the state-file
and ``/proc`` readers): it writes a
``loading`` health file for this run (a previous run's verdict is never read as this one's), and a
fresh key when there is no key file at all; until the daemon's own watcher is armed, a thread
writes the key again within milliseconds if it vanishes. Everything else (a key file that is not
valid, folders that cannot be made, any doubt about the arguments) is left to the daemon, which
handles it fully and reports it; this module never fails and never logs.

What it did is an :class:`Early` record that ``__main__`` hands to the daemon.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from vllmd import options
from vllmd.apikey import KEY_FILE, KEY_FILE_MODE, key_document, may_hold_legacy_key, new_key
from vllmd.process.proc import boot_id, start_time
from vllmd.state.atomicfile import create_atomic, write_atomic
from vllmd.state.readfile import UnreadableFile, read_small_file

TYPE_CHECKING = False  # not typing's: importing typing would cost what this module saves
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

STARTING_MESSAGE = "vllmd is starting."
"""The health message until the daemon has looked at the files (a few milliseconds)."""
KEY_WATCH_S = 0.005
"""Until the daemon watches the key itself, a deleted key is written again within this long..."""
STORE_HEAD_BYTES = 1 << 20
"""The most of ``store.json`` looked at for a key to adopt (the daemon's cap on the file)."""
KEY_WATCH_MAX_S = 30.0
"""...for at most this long (the daemon takes over within a second; this bounds a stray thread)."""


class Early:
    """What ``run``'s first milliseconds did, for the daemon to take over.

    Attributes:
        signals: SIGTERM and SIGINT received before the daemon's own handlers, in order: it acts
            on them when it is up. As PID 1 a signal without a handler is dropped, and a container
            stop would wait for SIGKILL.
        created_key: The key written here, if one was: the daemon logs it (masked).
    """

    __slots__ = ("_done", "created_key", "signals")

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.created_key: str | None = None
        self._done = threading.Event()

    def stop_watching_key(self) -> None:
        """The daemon watches the key now (its watcher armed, its first look done): stop ours."""
        self._done.set()

    def _remember(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)


def early_start(argv: Sequence[str], environ: Mapping[str, str]) -> Early:
    """For ``run``: write a ``loading`` health file, then a key if there is no key file.

    ``argv`` is the command line after the program name. Does nothing for other commands, for
    ``--help``, or when the folders cannot be told for sure (the daemon then does it all).
    """
    early = Early()
    if not argv or argv[0] != "run":
        return early
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, early._remember)
    public = _folder(argv[1:], environ, options.PUBLIC)
    run_dir = _folder(argv[1:], environ, options.RUN_DIR)
    data = _folder(argv[1:], environ, options.DATA)
    if public is None or run_dir is None or data is None:
        return early
    try:
        os.makedirs(run_dir, exist_ok=True)
        # Without the fsyncs: the daemon's publisher rewrites it durably moments later.
        write_atomic(os.path.join(run_dir, options.HEALTH_FILE), _health_document(), durable=False)
    except OSError:
        pass  # the daemon retries, and says why
    paths = _KeyPaths(public, data)
    if _write_key_if_missing(early, paths):
        watch = threading.Thread(
            target=_watch_key, args=(early, paths), name="vllmd-early-key", daemon=True
        )
        watch.start()
    return early


class _KeyPaths:
    """Where the key goes (the public folder, the key file) and where one may wait to be adopted."""

    __slots__ = ("key", "public", "store")

    def __init__(self, public: str, data: str) -> None:
        self.public = public
        self.key = os.path.join(public, KEY_FILE)
        self.store = os.path.join(data, options.STORE_FILE)


def _watch_key(early: Early, paths: _KeyPaths) -> None:
    """Write the key again when it vanishes, until :meth:`Early.stop_watching_key`: the daemon's
    own watcher is armed only after its imports (a quarter of a second on a busy machine), and the
    contract gives a deleted key 100 ms to come back."""
    deadline = time.monotonic() + KEY_WATCH_MAX_S
    while not early._done.wait(KEY_WATCH_S) and time.monotonic() < deadline:
        _write_key_if_missing(early, paths)


def _write_key_if_missing(early: Early, paths: _KeyPaths) -> bool:
    """Write a new key when nothing is at the key's path; whether the path could be looked at.

    A file that is there (valid or not) is the daemon's to judge, and so is a key an earlier
    package left in ``store.json``: the daemon adopts it (a new key here would break the
    dependents that hold the old one). The create never overwrites, so the daemon writing its own
    key at the same moment loses nothing: one of the two wins whole.
    """
    try:
        os.lstat(paths.key)
        return True
    except FileNotFoundError:
        pass
    except OSError:
        return False
    if may_hold_legacy_key(_head(paths.store)):
        return True
    key = new_key()
    # Said before the file appears, so that whoever sees the file also sees which key it was.
    previous, early.created_key = early.created_key, key
    try:
        os.makedirs(paths.public, exist_ok=True)
        if not create_atomic(paths.key, key_document(key), mode=KEY_FILE_MODE):
            early.created_key = previous  # another writer's key won
    except OSError:
        early.created_key = previous
        return False
    return True


def _head(path: str) -> bytes:
    """The bytes of the regular file ``path`` (b"" for anything else, or too large), read
    without blocking: a FIFO in its place would otherwise hang the start."""
    try:
        return read_small_file(path, STORE_HEAD_BYTES)
    except (OSError, UnreadableFile):
        return b""


def _folder(
    args: Sequence[str], environ: Mapping[str, str], option: options.Spelling
) -> str | None:
    """The folder ``option`` names (flag, else environment, else default), or None when unsure."""
    flag = option.flag
    value: str | None = None
    for i, arg in enumerate(args):
        name, eq, rest = arg.partition("=")
        if arg in ("-h", "--help") or arg == "--":
            return None
        if name != flag and len(name) > 2 and flag.startswith(name):
            return None  # an abbreviation argparse would accept: let it decide
        if name == flag:
            if eq:
                value = rest
            elif i + 1 < len(args):
                value = args[i + 1]
            else:
                return None
    if value is None:
        value = environ.get(option.env, option.default)
    if not value:
        return None
    return os.path.abspath(os.path.expanduser(value))


def _health_document() -> bytes:
    """A ``loading`` health file for this run, in the shape the daemon's publisher writes."""
    pid = os.getpid()
    boot = boot_id() or ""
    if not all(c in "0123456789abcdef-" for c in boot):  # spelled into the JSON below as it is
        boot = ""
    started = start_time(pid)
    if started is None:
        started = -1
    return (
        "{\n"
        '  "result": "loading",\n'
        f'  "message": "{STARTING_MESSAGE}",\n'
        f'  "since": {round(time.time(), 3)},\n'
        f'  "pid": {pid},\n'
        '  "task": null,\n'
        '  "detail": {\n    "phase": "starting"\n  },\n'
        '  "instance": {\n'
        f'    "boot_id": "{boot}",\n'
        f'    "pid": {pid},\n'
        f'    "started": {started}\n'
        "  }\n"
        "}\n"
    ).encode()
