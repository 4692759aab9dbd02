"""What the daemon needs on disk before it can run vLLM, and the machine's linker cache.

Each step raises ``OSError`` (or :class:`InvalidCredentials`) naming the folder or file; the
daemon logs it and tries again later (as PID 1, exiting would only restart the container into the
same fault): the key on every wake-up, the launch's prerequisites before every launch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from vllmd import guard
from vllmd.core.masking import redact
from vllmd.hardware.linker import refresh_linker_cache
from vllmd.settings import Settings
from vllmd.state.atomicfile import write_atomic
from vllmd.state.credentials import ensure_key

if TYPE_CHECKING:
    from vllmd.early import Early

__all__ = ["ensure_key_logged", "install_guard", "ldconfig", "make_folders"]

log = logging.getLogger("vllmd.daemon")  # the component name users see in logs


def make_folders(*folders: Path) -> None:
    """Create ``folders``; raise OSError with a clear message when we cannot."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create {folder}: {exc.strerror}") from exc


def ensure_key_logged(settings: Settings, early: Early | None = None) -> None:
    """Make sure a valid API key is on disk, and say what was done about it.

    ``early`` says which key was written a moment earlier, before the imports (vllmd/early.py):
    that one is reported as written, once.
    """
    state = ensure_key(settings.credentials_path, settings.store_path)
    if state.moved_aside is not None:
        log.warning("%s; moved it aside to %s", state.problem, state.moved_aside.name)
    written_early = (
        early is not None and state.moved_aside is None and state.key == early.created_key
    )
    if early is not None:
        early.created_key = None  # said once
    if state.created or written_early:
        log.info("wrote a new API key %s to %s", redact(state.key), settings.credentials_path)


def ldconfig(settings: Settings) -> None:
    """Refresh the linker cache once (Triton must find the host-injected libcuda)."""
    if not settings.ldconfig:
        return
    refresh = refresh_linker_cache()
    if refresh.tried and not refresh.done:
        log.warning("%s (continuing)", refresh.problem)


def install_guard(run_dir: Path) -> Path:
    """Place the guard module alone in ``RUN_DIR/pythonpath`` and return that folder.

    Each file is replaced atomically: a vLLM that imports it while it is placed again (before
    every launch) reads the old file or the new one, never half of either.
    """
    folder = run_dir / "pythonpath"
    package = folder / "vllmd"
    package.mkdir(parents=True, exist_ok=True)
    write_atomic(package / "__init__.py", b'"""vllmd\'s API key guard, alone."""\n')
    write_atomic(package / "guard.py", Path(guard.__file__).read_bytes())
    return folder
