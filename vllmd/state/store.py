"""``DATA/store.json``: the ``vllm serve`` arguments, the extra environment, the selection.

Lenient with a file that StartOS and people edit: every key is optional and keys vllmd does not
know are kept when vllmd rewrites the file (the file is decoded twice: once into the typed schema
for validation, once into raw values that are re-encoded untouched). An empty or half-written file
is invalid, not "no model": a non-atomic writer passes through that state.
"""

from __future__ import annotations

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
    raw: dict[str, Any] = {}
    data = _read(path) or b""
    if data.strip():
        try:
            raw = dict(_raw_decoder.decode(data))
        except (msgspec.DecodeError, RecursionError) as exc:
            raise StoreError(f"{path}: {exc}.", "Fix or remove the file first.") from exc
    for name, value in changes.items():
        raw[name] = msgspec.Raw(_encoder.encode(value))
    compact = _encoder.encode(raw)
    encoded = msgspec.json.format(compact, indent=2) + b"\n"
    if len(encoded) > MAX_STORE_BYTES:  # deep nesting indents quadratically: stay compact
        encoded = compact + b"\n"
    if len(encoded) > MAX_STORE_BYTES:
        raise StoreError(
            f"{path}: the new content would be larger than {MAX_STORE_BYTES:,} bytes.",
            "Remove what is not needed from the file first.",
        )
    store = parse(encoded, path)  # never write a file we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encoded, mode=0o644)
    return store
