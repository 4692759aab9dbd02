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
from vllmd.core.schema import ENV_NAME_PATTERN, EnvName, EnvVar, ModelSelection, Store
from vllmd.state.atomicfile import write_atomic

__all__ = ["ENV_NAME_PATTERN", "EnvName", "EnvVar", "ModelSelection", "Store", "StoreError"]


class StoreError(VllmdError):
    """Raised when ``store.json`` exists but cannot be used; the problem names file and field."""


_decoder = msgspec.json.Decoder(Store)
_raw_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()

_HINT = "Fix the file, or run the Set Model action to write a new one."


def parse(data: bytes, path: Path) -> Store:
    """The store held in ``data`` (the content of ``path``), or :class:`StoreError`."""
    if not data.strip():
        raise StoreError(f"{path}: the file is empty (a write may be in progress).", _HINT)
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StoreError(f"{path}: {exc}.", _HINT) from exc


def read_store(path: Path) -> Store | None:
    """The store in ``path``, ``None`` when there is no file, :class:`StoreError` when bad."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise StoreError(f"{path}: is a folder, not a file.", _HINT) from exc
    return parse(data, path)


def update_store(path: Path, changes: Mapping[str, Any]) -> Store:
    """Set the top-level keys in ``changes`` and rewrite the file atomically, keeping the rest.

    Raises :class:`StoreError` when the present file is not a JSON object, so that nothing a
    person wrote is silently thrown away; the caller decides what to do with it.
    """
    raw: dict[str, Any] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    if data.strip():
        try:
            raw = dict(_raw_decoder.decode(data))
        except msgspec.DecodeError as exc:
            raise StoreError(f"{path}: {exc}.", "Fix or remove the file first.") from exc
    for name, value in changes.items():
        raw[name] = msgspec.Raw(_encoder.encode(value))
    encoded = msgspec.json.format(_encoder.encode(raw), indent=2) + b"\n"
    store = parse(encoded, path)  # never write a file we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encoded, mode=0o644)
    return store
