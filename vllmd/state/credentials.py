"""``PUBLIC/credentials.json``: the API key, its schema, and keeping it valid.

The file is ``{"apiKey": "<22 characters of [A-Za-z0-9]>"}``, pretty-printed, mode 0644 so that
dependents can read it. A missing file is created; a file that does not hold a valid key is moved
aside (never deleted) and replaced. Errors name the file and the field, never the key.
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from vllmd.core.errors import VllmdError
from vllmd.core.masking import masker
from vllmd.state.atomicfile import aside_path, create_atomic

KEY_LENGTH = 22
KEY_ALPHABET = string.ascii_letters + string.digits

ApiKey = Annotated[str, msgspec.Meta(pattern=f"^[A-Za-z0-9]{{{KEY_LENGTH}}}$")]


class Credentials(msgspec.Struct, forbid_unknown_fields=False):
    """The content of ``credentials.json``."""

    apiKey: ApiKey


class InvalidCredentials(VllmdError):
    """Raised when ``credentials.json`` exists but does not hold a valid key."""


_decoder = msgspec.json.Decoder(Credentials)
_encoder = msgspec.json.Encoder()


def new_key() -> str:
    """A fresh key: 22 characters drawn from ``[A-Za-z0-9]`` with :mod:`secrets`."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def encode(key: str) -> bytes:
    """The file content for ``key``: pretty-printed JSON with a final newline."""
    return msgspec.json.format(_encoder.encode(Credentials(apiKey=key)), indent=2) + b"\n"


def parse(data: bytes, path: Path) -> str:
    """The key held in ``data`` (the content of ``path``), or :class:`InvalidCredentials`."""
    try:
        return _decoder.decode(data).apiKey
    except msgspec.DecodeError as exc:
        # msgspec's messages name the field path ($.apiKey) and never echo the value.
        raise InvalidCredentials(f"{path}: {exc}") from exc


def read_key(path: Path) -> str:
    """The key in ``path``; ``FileNotFoundError`` when absent, InvalidCredentials when bad."""
    try:
        data = path.read_bytes()
    except IsADirectoryError as exc:
        raise InvalidCredentials(f"{path}: is a folder, not a file") from exc
    key = parse(data, path)
    masker.add(key)
    return key


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
            return KeyState(read_key(path), moved_aside=moved, problem=problem)
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
        if create_atomic(path, encode(key), mode=0o644):
            masker.add(key)
            return KeyState(key, created=True, moved_aside=moved, problem=problem)
        # Another writer created it between our read and our create: read theirs.
    raise InvalidCredentials(f"{path}: could not settle on a valid key after 10 attempts")
