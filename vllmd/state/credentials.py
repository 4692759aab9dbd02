"""``PUBLIC/credentials.json``: the API key, its schema, and keeping it valid.

The file is ``{"apiKey": "<22 characters of [A-Za-z0-9]>"}``, pretty-printed, mode 0644 so that
dependents can read it. A missing file is created; a file that does not hold a valid key is moved
aside (never deleted) and replaced: bad content, and also whatever is not a readable regular file
(a dangling symlink, a FIFO, a device, a folder). A key file whose mode drifted is given 0644 back.

The content is judged by the guard's own :func:`vllmd.guard.parse_key`, with the guard's size cap,
so that the daemon never keeps a key that its guard refuses (a permanent lockout). Errors name the
file and the field, never the key.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vllmd.apikey import KEY_FILE_MODE, key_document, new_key
from vllmd.core.errors import VllmdError
from vllmd.core.masking import masker
from vllmd.guard import MAX_KEY_FILE_BYTES, parse_key
from vllmd.state.atomicfile import aside_path, create_atomic
from vllmd.state.readfile import UnreadableFile, read_small_file

log = logging.getLogger(__name__)


class InvalidCredentials(VllmdError):
    """Raised when ``credentials.json`` exists but does not hold a valid key."""


def parse(data: bytes, path: Path) -> str:
    """The key held in ``data`` (the content of ``path``), or :class:`InvalidCredentials`.

    Exactly the files the guard accepts (the same function judges them); the reason never quotes
    the content.
    """
    key, reason = parse_key(data)
    if key is None:
        raise InvalidCredentials(f"{path}: {reason}")
    return key


def read_key(path: Path) -> str:
    """The key in ``path``; ``FileNotFoundError`` when absent, InvalidCredentials when bad.

    A path that is not a readable regular file (a FIFO, a device, a dangling symlink...) is
    :class:`InvalidCredentials` too, found without blocking and without reading more than the
    guard would.
    """
    try:
        data = read_small_file(path, MAX_KEY_FILE_BYTES)
    except UnreadableFile as exc:
        raise InvalidCredentials(exc.problem.rstrip(".")) from exc
    key = parse(data, path)
    masker.add_key(key)
    return key


def _restore_mode(path: Path) -> None:
    """Give the key file its mode 0644 back if it drifted (dependents could not read it)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode != KEY_FILE_MODE:
            os.chmod(path, KEY_FILE_MODE)
            log.warning(
                "%s had mode %04o; restored %04o so that dependents can read it",
                path,
                mode,
                KEY_FILE_MODE,
            )
    except OSError as exc:
        log.warning("%s: cannot restore mode %04o: %s", path, KEY_FILE_MODE, exc.strerror)


@dataclass(frozen=True, slots=True)
class KeyState:
    """The outcome of :func:`ensure_key`: the key, and what had to be done to have one."""

    key: str
    created: bool = False
    moved_aside: Path | None = None
    problem: str | None = None


def ensure_key(path: Path) -> KeyState:
    """Return the valid key in ``path``, creating or replacing the file when it has none.

    Creates the folder when it is missing. A file that holds no valid key is renamed to
    ``credentials.json.invalid-<UTC timestamp>`` and a new key written in its place.
    """
    problem: str | None = None
    moved: Path | None = None
    for _ in range(10):
        try:
            key = read_key(path)
            _restore_mode(path)
            return KeyState(key, moved_aside=moved, problem=problem)
        except FileNotFoundError:
            pass
        except InvalidCredentials as exc:
            problem = str(exc)
            aside = aside_path(path)
            try:
                os.rename(path, aside)
                moved = aside
            except FileNotFoundError:
                pass  # someone else moved or replaced it; look again
        path.parent.mkdir(parents=True, exist_ok=True)
        key = new_key()
        if create_atomic(path, key_document(key), mode=KEY_FILE_MODE):
            masker.add_key(key)
            return KeyState(key, created=True, moved_aside=moved, problem=problem)
        # Another writer created it between our read and our create: read theirs.
    raise InvalidCredentials(f"{path}: could not settle on a valid key after 10 attempts")
