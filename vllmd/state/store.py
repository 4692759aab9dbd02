"""``DATA/store.json``: the ``vllm serve`` arguments, the extra environment, the selection.

Lenient with a file that StartOS and people edit: every key is optional and keys vllmd does not
know are kept when vllmd rewrites the file (the file is decoded twice: once into the typed schema
for validation, once into raw values that are re-encoded untouched). An empty or half-written file
is invalid, not "no model": a non-atomic writer passes through that state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from vllmd.core.errors import VllmdError
from vllmd.core.schema import (
    ENV_NAME_PATTERN,
    EnvName,
    EnvVar,
    ModelSelection,
    Store,
    nul_problem,
)
from vllmd.state.atomicfile import write_atomic
from vllmd.state.readfile import UnreadableFile, read_small_file

__all__ = ["ENV_NAME_PATTERN", "EnvName", "EnvVar", "ModelSelection", "Store", "StoreError"]


class StoreError(VllmdError):
    """Raised when ``store.json`` exists but cannot be used; the problem names file and field."""


_decoder = msgspec.json.Decoder(Store)
_raw_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()

_HINT = "Fix the file, or run the Set Model action to write a new one."

MAX_STORE_BYTES = 1 << 20
"""A store.json larger than this is refused unread (a real one is a few KiB)."""


def parse(data: bytes, path: Path) -> Store:
    """The store held in ``data`` (the content of ``path``), or :class:`StoreError`."""
    if not data.strip():
        raise StoreError(f"{path}: the file is empty (a write may be in progress).", _HINT)
    try:
        store = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StoreError(f"{path}: {exc}.", _HINT) from exc
    except RecursionError as exc:  # nesting deeper than the interpreter's stack
        raise StoreError(f"{path}: JSON is nested too deeply.", _HINT) from exc
    problem = nul_problem(store)
    if problem is not None:
        raise StoreError(f"{path}: {problem}.", _HINT)
    return store


def _read(path: Path) -> bytes | None:
    """The bytes of ``path`` (None when absent); StoreError when it is not a readable file."""
    try:
        return read_small_file(path, MAX_STORE_BYTES)
    except FileNotFoundError:
        return None
    except UnreadableFile as exc:
        raise StoreError(exc.problem, exc.hint) from exc


def read_store(path: Path) -> Store | None:
    """The store in ``path``, ``None`` when there is no file, :class:`StoreError` when bad.

    A path that is not a readable regular file (a FIFO, a device, a dangling symlink, a loop)
    is a :class:`StoreError` that names it, found without blocking: never "no model".
    """
    data = _read(path)
    return None if data is None else parse(data, path)


def update_store(path: Path, changes: Mapping[str, Any]) -> Store:
    """Set the top-level keys in ``changes`` and rewrite the file atomically, keeping the rest.

    Raises :class:`StoreError` when the present file is not a JSON object, so that nothing a
    person wrote is silently thrown away; the caller decides what to do with it.
    """
    raw = _raw_of(path, _read(path) or b"")
    for name, value in changes.items():
        raw[name] = msgspec.Raw(_encoder.encode(value))
    encoded = _encode_raw(path, raw)
    store = parse(encoded, path)  # never write a file we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encoded, mode=0o644)
    return store


def remove_field(path: Path, name: str) -> bool:
    """Remove the top-level key ``name`` from ``path``, keeping every other key byte for byte;
    whether it was removed.

    Atomic, and only when the file is still the one read: a writer in between (Set Model) wins
    and this returns False, for the caller to try again later. Raises :class:`StoreError` when
    the file is not a JSON object, OSError as the disk does.
    """
    try:
        before = os.stat(path)
    except FileNotFoundError:
        return False
    data = _read(path)
    if data is None:
        return False
    raw = _raw_of(path, data)
    if name not in raw:
        return False
    del raw[name]
    encoded = _encode_raw(path, raw)

    def unchanged() -> bool:  # asked with the new content on disk, just before the rename
        try:
            after = os.stat(path)
        except FileNotFoundError:
            return False
        return _identity(after) == _identity(before)

    return write_atomic(path, encoded, mode=0o644, still=unchanged)


def _identity(found: os.stat_result) -> tuple[int, int, int, int]:
    """A file's identity: a rename shows in the inode, an edit in place in size and mtime."""
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def _raw_of(path: Path, data: bytes) -> dict[str, Any]:
    """The top-level keys of ``data`` as raw JSON values, untouched; {} for an empty file."""
    if not data.strip():
        return {}
    try:
        return dict(_raw_decoder.decode(data))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise StoreError(f"{path}: {exc}.", "Fix or remove the file first.") from exc


def _encode_raw(path: Path, raw: Mapping[str, Any]) -> bytes:
    """``raw`` as the file's content: pretty-printed, or compact when that is too large."""
    compact = _encoder.encode(raw)
    encoded = msgspec.json.format(compact, indent=2) + b"\n"
    if len(encoded) > MAX_STORE_BYTES:  # deep nesting indents quadratically: stay compact
        encoded = compact + b"\n"
    if len(encoded) > MAX_STORE_BYTES:
        raise StoreError(
            f"{path}: the new content would be larger than {MAX_STORE_BYTES:,} bytes.",
            "Remove what is not needed from the file first.",
        )
    return encoded
