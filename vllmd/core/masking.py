"""Keep the API key out of every line the daemon writes.

One process-wide :class:`Masker` knows the keys this daemon has used (the current one and the ones
it replaced, because an old vLLM may still print an old key) and the other secrets of the launch
(``serveEnv`` values such as ``HF_TOKEN``, a ``--hf-token`` value). Log records and vLLM's
passed-through output go through it before they are written anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

MASK = "***"
MIN_SECRET = 8


def redact(key: str) -> str:
    """A short, safe stand-in for a key in messages: its first four characters, then ``…``."""
    return f"{key[:4]}…" if len(key) > 8 else MASK


MAX_KEYS = 16
"""API keys remembered: the current one and those it replaced (an old vLLM may print one)."""
MAX_SECRETS = 64
"""Secrets of earlier launches remembered (``serveEnv`` values, ``--hf-token``), newest first."""


class Masker:
    """Replaces every known key and secret in text with :data:`MASK`.

    The API keys are kept apart from the other secrets, and the current launch's secrets apart
    from those of earlier launches (a bounded list): however many ``serveEnv`` values a launch
    carries, they are all masked, and they never push the key out (issue 11).
    """

    def __init__(self) -> None:
        self._keys: tuple[str, ...] = ()
        self._current: tuple[str, ...] = ()
        self._secrets: tuple[str, ...] = ()
        self._all: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add_key(self, key: str) -> None:
        """Remember the API key ``key`` so it is masked from now on, whatever else is added."""
        if len(key) < MIN_SECRET or key in self._keys:
            return
        with self._lock:
            self._keys = (key, *self._keys)[:MAX_KEYS]
            self._rebuild()

    def use(self, secrets: Iterable[str]) -> None:
        """Mask every one of ``secrets`` (the current launch's: all of them, however many), and
        keep the ones they replace among the bounded recent secrets (an old vLLM may still
        print one)."""
        current = tuple(dict.fromkeys(s for s in secrets if len(s) >= MIN_SECRET))
        if current == self._current:
            return
        with self._lock:
            gone = tuple(s for s in self._current if s not in current)
            self._secrets = tuple(dict.fromkeys((*gone, *self._secrets)))[:MAX_SECRETS]
            self._current = current
            self._rebuild()

    def add(self, secret: str) -> None:
        """Remember another ``secret`` so it is masked from now on (the newest are kept).

        Secrets shorter than :data:`MIN_SECRET` are ignored: masking every ``1`` in a log would
        hide nothing and garble everything.
        """
        if len(secret) < MIN_SECRET or secret in self._secrets:
            return
        with self._lock:
            self._secrets = (secret, *self._secrets)[:MAX_SECRETS]
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first: a secret that contains another is masked whole, not around the other.
        known = set(self._keys + self._current + self._secrets)
        self._all = tuple(sorted(known, key=len, reverse=True))

    @property
    def longest(self) -> int:
        """The length in UTF-8 bytes of the longest secret known (0 when none)."""
        return max((len(secret.encode()) for secret in self._all), default=0)

    def mask(self, text: str) -> str:
        """``text`` with every known key and secret replaced by :data:`MASK`."""
        for secret in self._all:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask_bytes(self, data: bytes) -> bytes:
        """``data`` with every known key and secret replaced by :data:`MASK`."""
        for secret in self._all:
            encoded = secret.encode()
            if encoded in data:
                data = data.replace(encoded, MASK.encode())
        return data


masker = Masker()
"""The process-wide masker that logging and the log pump share."""
