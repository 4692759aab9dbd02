"""The API key's generator, its file's name and bytes, and the mark of a key to adopt.

:mod:`vllmd.state.credentials` keeps the key valid; :mod:`vllmd.early` writes a missing one in
``vllmd run``'s first milliseconds, before anything else is imported. Both take the key from here,
so this module imports only ``os``.

Start9's earlier ``vllm`` packages kept the key in ``store.json`` (``apiKey``) and copied it to
``credentials.json``. When the key file is missing or invalid and ``store.json`` holds a valid
``apiKey``, vllmd adopts that key instead of making a new one (dependents keep working across the
update), then moves it out of ``store.json`` so that it is adopted once: deleting the key file
later rotates the key, as it always does.
"""

from __future__ import annotations

import os

KEY_FILE = "credentials.json"
"""The key file's name, in the public volume."""
KEY_LENGTH = 22
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
KEY_FILE_MODE = 0o644
"""Dependents read the key file: it must stay readable by all."""


def new_key() -> str:
    """22 characters drawn uniformly from ``[A-Za-z0-9]`` (``os.urandom``, rejection sampling)."""
    chars: list[str] = []
    while len(chars) < KEY_LENGTH:
        for byte in os.urandom(32):
            if byte < 248:  # 4 x 62: the bytes that map onto the alphabet evenly
                chars.append(KEY_ALPHABET[byte % 62])
    return "".join(chars[:KEY_LENGTH])


def key_document(key: str) -> bytes:
    """The content of ``credentials.json`` for ``key``: pretty-printed JSON, a final newline.

    ``key`` is 22 characters of ``[A-Za-z0-9]`` (nothing to escape), so the text is spelled here
    rather than encoded: the early writer has no JSON encoder loaded.
    """
    return f'{{\n  "apiKey": "{key}"\n}}\n'.encode()


LEGACY_KEY_FIELD = "apiKey"
"""Where Start9's earlier packages kept the key in ``store.json``."""
LEGACY_KEY_MARK = f'"{LEGACY_KEY_FIELD}"'.encode()
"""The bytes a ``store.json`` that holds a key to adopt must contain (its field's name)."""


def may_hold_legacy_key(store: bytes) -> bool:
    """Whether ``store.json``'s bytes may hold a key to adopt: a cheap test, before any parse.

    Both the early writer (which then leaves the key to the daemon) and the adoption itself
    (which then reads the field) ask this, so they agree on which files hold one.
    """
    return LEGACY_KEY_MARK in store
