"""``DATA/store.json``: the ``vllm serve`` arguments, the extra environment, the selection.

Lenient with a file that StartOS and people edit: every key is optional and keys vllmd does not
know are kept when vllmd rewrites the file (the file is decoded twice: once into the typed schema
for validation, once into raw values that are re-encoded untouched). An empty or half-written file
is invalid, not "no model": a non-atomic writer passes through that state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from vllmd.state.atomicfile import write_atomic

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, msgspec.Meta(pattern=ENV_NAME_PATTERN)]


class EnvVar(msgspec.Struct, frozen=True):
    """One variable for the vLLM process; ``value`` is a secret and never printed."""

    name: EnvName
    value: str


class ModelSelection(msgspec.Struct, frozen=True):
    """What the Set Model form remembers: the preset id or ``custom``, and the custom text."""

    selection: str | None = None
    customArgs: str | None = None


class Store(msgspec.Struct, frozen=True):
    """The typed view of ``store.json``; unknown keys are ignored here and kept on rewrite."""

    serveArgs: tuple[str, ...] = ()
    serveEnv: tuple[EnvVar, ...] = ()
    modelSelection: ModelSelection | None = None

    @property
    def model_selected(self) -> bool:
        """Whether a model is selected (a non-empty ``serveArgs``)."""
        return bool(self.serveArgs)


class StoreError(ValueError):
    """Raised when ``store.json`` exists but cannot be used; the message names file and field."""


_decoder = msgspec.json.Decoder(Store)
_raw_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()

HINT = "Fix the file, or run the Set Model action to write a new one."


def parse(data: bytes, path: Path) -> Store:
    """The store held in ``data`` (the content of ``path``), or :class:`StoreError`."""
    if not data.strip():
        raise StoreError(f"{path}: the file is empty (a write may be in progress). {HINT}")
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise StoreError(f"{path}: {exc}. {HINT}") from exc


def read_store(path: Path) -> Store | None:
    """The store in ``path``, ``None`` when there is no file, :class:`StoreError` when bad."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise StoreError(f"{path}: is a folder, not a file. {HINT}") from exc
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
            raise StoreError(f"{path}: {exc}. Fix or remove the file first.") from exc
    for name, value in changes.items():
        raw[name] = msgspec.Raw(_encoder.encode(value))
    encoded = msgspec.json.format(_encoder.encode(raw), indent=2) + b"\n"
    store = parse(encoded, path)  # never write a file we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encoded, mode=0o644)
    return store
