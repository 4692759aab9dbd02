"""Keep the API key out of every line the daemon writes.

One process-wide :class:`Masker` knows the keys this daemon has used (the current one and the ones
it replaced, because an old vLLM may still print an old key) and the other secrets of the launch
(``serveEnv`` values such as ``HF_TOKEN``, a ``--hf-token`` value). Log records and vLLM's
passed-through output go through it before they are written anywhere.
"""

from __future__ import annotations

import threading

MASK = "***"
MIN_SECRET = 8


def redact(key: str) -> str:
    """A short, safe stand-in for a key in messages: its first four characters, then ``…``."""
    return f"{key[:4]}…" if len(key) > 8 else MASK


class Masker:
    """Replaces every known key in text with :data:`MASK`."""

    def __init__(self) -> None:
        self._keys: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        """Remember ``key`` so it is masked from now on (the last 32 secrets are kept).

        Secrets shorter than :data:`MIN_SECRET` are ignored: masking every ``1`` in a log would
        hide nothing and garble everything.
        """
        if len(key) < MIN_SECRET or key in self._keys:
            return
        with self._lock:
            self._keys = (key, *self._keys)[:32]

    def mask(self, text: str) -> str:
        """``text`` with every known key replaced by :data:`MASK`."""
        for key in self._keys:
            if key in text:
                text = text.replace(key, MASK)
        return text

    def mask_bytes(self, data: bytes) -> bytes:
        """``data`` with every known key replaced by :data:`MASK`."""
        for key in self._keys:
            encoded = key.encode()
            if encoded in data:
                data = data.replace(encoded, MASK.encode())
        return data


masker = Masker()
"""The process-wide masker that logging and the log pump share."""
