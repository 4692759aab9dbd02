"""The first milliseconds of ``vllmd run``: a fresh health file and the API key, before any import.

Dependents wait for ``PUBLIC/credentials.json`` and StartOS reads ``RUN_DIR/health.json`` from the
moment the container starts, while the daemon's own modules take a tenth of a second to import.
So ``python -m vllmd run`` (and the ``vllmd`` command) first calls :func:`early_start`, which uses
the standard library's built-in modules only (``os``, ``sys``, ``time``): it writes a ``loading``
health file for this run (a previous run's verdict is never read as this one's), and a fresh key
when there is no key file at all; until the daemon's own watcher is armed, a thread writes the
key again within milliseconds if it vanishes. Everything else (a key file that is not valid,
folders that cannot be made, any doubt about the arguments) is left to the daemon, which handles
it fully and reports it; this module never fails and never logs.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C; ``signal`` would import enum: 6 ms
import _thread
import os
import time

TYPE_CHECKING = False  # not typing's: importing typing would cost what this module saves
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PUBLIC = ("--public", "VLLMD_PUBLIC", "/public")
"""The public volume's flag, environment variable and default (``vllmd.settings`` uses these)."""
RUN_DIR = ("--run-dir", "VLLMD_RUN_DIR", "/run/vllmd")
"""The runtime folder's flag, environment variable and default (``vllmd.settings`` uses these)."""
KEY_FILE = "credentials.json"
HEALTH_FILE = "health.json"
KEY_LENGTH = 22
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
STARTING_MESSAGE = "vllmd is starting."
"""The health message until the daemon has looked at the files (a few milliseconds)."""

created_key: str | None = None
"""The key :func:`early_start` wrote, if it wrote one: the daemon logs it (masked)."""
KEY_WATCH_S = 0.005
"""Until the daemon watches the key itself, a deleted key is written again within this long..."""
KEY_WATCH_MAX_S = 30.0
"""...for at most this long (the daemon takes over within a second; this bounds a stray thread)."""

signals: list[int] = []
"""SIGTERM and SIGINT received before the daemon's own handlers: it acts on them when it is up.
As PID 1 a signal without a handler is dropped, and a container stop would wait for SIGKILL."""


def early_start(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """For ``run``: write a ``loading`` health file, then a key if there is no key file.

    ``argv`` is the command line after the program name. Does nothing for other commands, for
    ``--help``, or when the folders cannot be told for sure (the daemon then does it all).
    """
    if not argv or argv[0] != "run":
        return
    for signum in (_signal.SIGTERM, _signal.SIGINT):
        _signal.signal(signum, _remember)
    public = _folder(argv[1:], environ, PUBLIC)
    run_dir = _folder(argv[1:], environ, RUN_DIR)
    if public is None or run_dir is None:
        return
    try:
        os.makedirs(run_dir, exist_ok=True)
        _replace(os.path.join(run_dir, HEALTH_FILE), _health_document())
    except OSError:
        pass  # the daemon retries, and says why
    key_path = os.path.join(public, KEY_FILE)
    if _write_key_if_missing(public, key_path):
        global _watch_round
        _watch_round += 1
        _thread.start_new_thread(_watch_key, (public, key_path, _watch_round))


def stop_watching_key() -> None:
    """The daemon watches the key now (its watcher armed, its first look done): stop ours."""
    global _watch_round
    _watch_round += 1


_watch_round = 0
"""Which start-up watch may run: a watch ends once this moves on (a stop, or a newer start)."""


def _watch_key(public: str, key_path: str, round_: int) -> None:
    """Write the key again when it vanishes, until :func:`stop_watching_key`: the daemon's own
    watcher is armed only after its imports (a quarter of a second on a busy machine), and the
    contract gives a deleted key 100 ms to come back."""
    deadline = time.monotonic() + KEY_WATCH_MAX_S
    while _watch_round == round_ and time.monotonic() < deadline:
        time.sleep(KEY_WATCH_S)
        if _watch_round == round_:
            _write_key_if_missing(public, key_path)


def _write_key_if_missing(public: str, key_path: str) -> bool:
    """Write a new key when nothing is at ``key_path``; whether the path could be looked at.

    A file that is there (valid or not) is the daemon's to judge. ``link`` never overwrites, so
    the daemon writing its own key at the same moment loses nothing: one of the two wins whole.
    """
    global created_key
    try:
        os.lstat(key_path)
        return True
    except FileNotFoundError:
        pass
    except OSError:
        return False
    key = new_key()
    try:
        os.makedirs(public, exist_ok=True)
        if _create(key_path, key_document(key)):
            created_key = key
    except OSError:
        return False
    return True


def _remember(signum: int, _frame: object) -> None:
    signals.append(signum)


def _folder(args: Sequence[str], environ: Mapping[str, str], option: tuple[str, ...]) -> str | None:
    """The folder ``option`` names (flag, else environment, else default), or None when unsure."""
    flag, env, default = option
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
        value = environ.get(env, default)
    if not value:
        return None
    return os.path.abspath(os.path.expanduser(value))


def new_key() -> str:
    """22 characters drawn uniformly from ``[A-Za-z0-9]`` (``os.urandom``, rejection sampling)."""
    chars: list[str] = []
    while len(chars) < KEY_LENGTH:
        for byte in os.urandom(32):
            if byte < 248:  # 4 x 62: the bytes that map onto the alphabet evenly
                chars.append(KEY_ALPHABET[byte % 62])
    return "".join(chars[:KEY_LENGTH])


def key_document(key: str) -> bytes:
    """``credentials.json`` for ``key``, byte for byte as the daemon writes it."""
    return f'{{\n  "apiKey": "{key}"\n}}\n'.encode()


def _health_document() -> bytes:
    """A ``loading`` health file for this run, in the shape the daemon's publisher writes."""
    pid = os.getpid()
    boot, started = _boot_id(), _start_time(pid)
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


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            text = f.read(64).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return text if all(c in "0123456789abcdef-" for c in text) else ""


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
        return int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22
    except (OSError, ValueError, IndexError):
        return -1


def _temp(path: str, data: bytes, *, durable: bool = True) -> str:
    """Write ``data`` to a fresh file beside ``path`` (mode 0644, fsynced when ``durable``);
    return its name."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.early-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # dependents read the key: the umask must not narrow it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: str, data: bytes) -> None:
    """Replace ``path`` by rename, without fsync: readers see the old file or the new one, and
    this one lives for milliseconds (the daemon's publisher rewrites it durably)."""
    tmp = _temp(path, data, durable=False)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _create(path: str, data: bytes) -> bool:
    """Create ``path`` only if nothing is there (``link`` never overwrites): whether we did."""
    tmp = _temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    _fsync_dir(os.path.dirname(path))
    return True
