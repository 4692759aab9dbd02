"""What the files want: ``credentials.json`` and ``store.json`` as they are now, turned into the
launch vLLM should run (CONTRACT §2.2, §2.4, §2.7).

The reconciler's eyes: it makes a missing or invalid key anew, keeps the last good store while
``store.json`` is invalid (and never touches the file), teaches the masker the store's secrets,
and warns once about fixed flags it drops. It writes no status: the reconciler reads
:attr:`DesiredLaunch.store_problem` and reports it.

It also says what the launch needs from the hub (:attr:`DesiredLaunch.targets`) and whether all
of it is in the cache (:attr:`DesiredLaunch.cached`); a launch whose files vllmd fetched
completely goes without the hub (``HF_HUB_OFFLINE=1``), unless that launch once missed a file
offline (:meth:`DesiredLaunch.go_online`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from vllmd.core.fetchplan import Target, targets
from vllmd.core.launch import Launch, plan_launch, secrets_of
from vllmd.core.masking import masker, redact
from vllmd.settings import Settings
from vllmd.state.credentials import InvalidCredentials, ensure_key
from vllmd.state.readfile import UnreadableFile, read_small_file
from vllmd.state.store import MAX_STORE_BYTES, Store, StoreError, read_store

__all__ = ["DesiredLaunch"]

log = logging.getLogger("vllmd.daemon.reconcile")  # part of the reconciler: its component name


class DesiredLaunch:
    """Reads both files on demand and remembers what it needs between reads.

    Args:
        settings: where the files are, and what the launch is made of.
        base_env: the environment vLLM inherits.
        guard_dir: where the API key guard lies, with ``--auth guard``.
        is_complete: whether every file of these hub targets is in the cache, as fetched by
            vllmd; ``None``: vllmd fetches nothing and vLLM downloads what it needs itself.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        base_env: Mapping[str, str],
        guard_dir: Path | None = None,
        is_complete: Callable[[Sequence[Target]], bool] | None = None,
    ) -> None:
        self._settings = settings
        self._base_env = dict(base_env)
        self._guard_dir = guard_dir
        self._key: str | None = None
        self._store: Store | None = None
        self._store_print: bytes | None = None
        self._store_problem: str | None = None
        self._dropped: tuple[str, ...] = ()
        self._is_complete = is_complete
        self._online: Launch | None = None
        self.targets: tuple[Target, ...] = ()
        """What the launch read last needs from the hub (empty: nothing, or no fetching)."""
        self.cached = True
        """Every file of :attr:`targets` is in the cache."""

    @property
    def store_problem(self) -> str | None:
        """Why ``store.json`` was not used at the last read (the last good one was), or None."""
        return self._store_problem

    def read_key(self) -> str | None:
        """The API key on disk, made anew when it is missing or invalid; the last one known when
        it cannot be written."""
        settings = self._settings
        try:
            state = ensure_key(settings.credentials_path, settings.store_path)
        except (OSError, InvalidCredentials) as exc:
            log.error("cannot keep an API key in %s: %s", settings.credentials_path, exc)
            return self._key
        if state.moved_aside is not None:
            log.warning(
                "%s; moved it aside to %s and wrote a new key",
                state.problem,
                state.moved_aside.name,
            )
        if state.key != self._key:
            if state.created:
                log.info(
                    "wrote a new API key %s to %s", redact(state.key), settings.credentials_path
                )
            elif self._key is not None:
                log.info(
                    "the API key in %s changed to %s", settings.credentials_path, redact(state.key)
                )
        self._key = state.key
        return state.key

    def _read_store(self) -> Store | None:
        """The store on disk, or the last good one while the file is invalid."""
        path = self._settings.store_path
        fingerprint = _fingerprint(path)
        if fingerprint is not None and fingerprint == self._store_print:
            store = self._store  # the content last read good, back again (or unchanged)
        else:
            try:
                store = read_store(path)
            except StoreError as exc:
                if str(exc) != self._store_problem:
                    log.error("%s Keeping the last good configuration.", exc)
                self._store_problem = str(exc)
                return self._store  # the last good one; the file is never touched
            self._store_print = fingerprint
            self._store = store
        if self._store_problem is not None:
            # Logged and cleared however it was fixed, so that breaking it again is news.
            log.info("%s is valid again", path)
        self._store_problem = None
        return store

    def read(self) -> Launch | None:
        """The launch the files describe now; ``None`` when no model is selected (or no key)."""
        key = self.read_key()
        store = self._read_store()
        if key is None:
            return None
        if store is not None:
            # vLLM may print them (its "non-default args" line does): all of them are masked.
            masker.use(secrets_of(store))
        needs: tuple[Target, ...] = ()
        if store is not None and self._is_complete is not None:
            needs = targets(store.serveArgs, _is_local)
        self.targets = needs
        self.cached = not needs or self._is_complete is None or self._is_complete(needs)
        offline = bool(needs) and self.cached
        settings = self._settings
        plan = plan_launch(store, key, settings, self._base_env, self._guard_dir, offline=offline)
        if plan.dropped != self._dropped and plan.dropped:
            log.warning(
                "ignoring %s in %s: vllmd sets these itself",
                ", ".join(plan.dropped),
                self._settings.store_path,
            )
        self._dropped = plan.dropped
        launch = plan.launch
        if launch is not None and launch == self._online:
            return replace(launch, offline=())
        self._online = None  # another configuration: the exception was for that one only
        return launch

    def go_online(self, launch: Launch) -> None:
        """``launch`` missed a file offline: from now on it goes with the hub reachable, so that
        vLLM downloads what it misses (until the configuration changes)."""
        self._online = launch


def _is_local(name: str) -> bool:
    """Whether vLLM would read ``name`` as a folder (it checks the path before the hub)."""
    return Path(name).exists()


def _fingerprint(path: Path) -> bytes | None:
    """A digest of ``path``'s content, or None when it cannot be read (never blocking: a FIFO
    or a device in its place must not freeze the event loop)."""
    try:
        data = read_small_file(path, MAX_STORE_BYTES)
    except (OSError, UnreadableFile):
        return None
    return hashlib.blake2b(data, digest_size=16).digest()
