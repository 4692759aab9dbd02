"""``PUBLIC/credentials.json``: the API key, its schema, and keeping it valid.

The file is ``{"apiKey": "<22 characters of [A-Za-z0-9]>"}``, pretty-printed, mode 0644 so that
dependents can read it. A missing file is created; a file that does not hold a valid key is moved
aside (never deleted) and replaced: bad content, and also whatever is not a readable regular file
(a dangling symlink, a FIFO, a device, a folder). A key file whose mode drifted is given 0644 back.
A key that an earlier package kept in ``store.json`` is adopted, once (:func:`ensure_key`).

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

from vllmd.apikey import (
    KEY_FILE,
    KEY_FILE_MODE,
    LEGACY_KEY_FIELD,
    key_document,
    may_hold_legacy_key,
    new_key,
)
from vllmd.core.errors import VllmdError
from vllmd.core.masking import masker, redact
from vllmd.guard import MAX_KEY_FILE_BYTES, key_of, parse_json, parse_key
from vllmd.state.atomicfile import aside_path, create_atomic
from vllmd.state.readfile import UnreadableFile, read_small_file
from vllmd.state.store import MAX_STORE_BYTES, StoreError, remove_field

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
    """The outcome of :func:`ensure_key`: the key, and what had to be done to have one.

    ``created`` is a new key; ``adopted`` is the key an earlier package kept in ``store.json``
    (never both).
    """

    key: str
    created: bool = False
    moved_aside: Path | None = None
    problem: str | None = None
    adopted: bool = False


def legacy_key(store_path: Path) -> str | None:
    """The valid ``apiKey`` an earlier package left in ``store.json``, or None.

    Judged like a key file (the guard's strict parser and key rule); a store that cannot be read
    holds none.
    """
    try:
        data = read_small_file(store_path, MAX_STORE_BYTES)
    except (FileNotFoundError, UnreadableFile):
        return None
    if not may_hold_legacy_key(data):
        return None
    document, _ = parse_json(data)
    return key_of(document)[0]


def _forget_legacy_key(store_path: Path) -> None:
    """Move the key out of ``store.json`` once ``credentials.json`` holds it durably: removed,
    every other key kept, so that deleting the key file later rotates the key as it should."""
    if legacy_key(store_path) is None:
        return  # none there (or not a key: nothing to adopt ever, left as it is)
    try:
        removed = remove_field(store_path, LEGACY_KEY_FIELD)
    except (OSError, StoreError) as exc:
        log.warning("%s: cannot remove the old apiKey (tried again later): %s", store_path, exc)
        return
    if removed:
        log.info(
            "removed the old apiKey from %s: the key lives in %s now",
            store_path,
            KEY_FILE,
        )


def ensure_key(path: Path, store_path: Path | None = None) -> KeyState:
    """Return the valid key in ``path``, creating or replacing the file when it has none.

    Creates the folder when it is missing. A file that holds no valid key is renamed to
    ``credentials.json.invalid-<UTC timestamp>`` and a new key written in its place. With
    ``store_path``, the key an earlier package kept in ``store.json`` is adopted instead of a new
    one, and removed from there once the key file holds a key (see :mod:`vllmd.apikey`).
    """
    problem: str | None = None
    moved: Path | None = None
    for _ in range(10):
        try:
            key = read_key(path)
            _restore_mode(path)
            if store_path is not None:
                _forget_legacy_key(store_path)
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
        adopted = None if store_path is None else legacy_key(store_path)
        key = adopted or new_key()
        if create_atomic(path, key_document(key), mode=KEY_FILE_MODE):  # durable when it returns
            masker.add_key(key)
            if store_path is not None and adopted is not None:
                log.info(
                    "adopted the API key %s from %s (an earlier package kept it there) into %s",
                    redact(key),
                    store_path,
                    path,
                )
                _forget_legacy_key(store_path)
            return KeyState(
                key,
                created=adopted is None,
                moved_aside=moved,
                problem=problem,
                adopted=adopted is not None,
            )
        # Another writer created it between our read and our create: read theirs.
    raise InvalidCredentials(f"{path}: could not settle on a valid key after 10 attempts")
