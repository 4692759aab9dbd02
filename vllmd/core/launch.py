"""The desired launch: vLLM's argv and environment, computed from the store and the key.

Pure: no I/O. The reconciler compares the :class:`Launch` this returns with the one that runs;
equal values mean nothing to do, so everything that should restart vLLM when it changes is in it,
and nothing else is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vllmd.core.schema import Store
from vllmd.guard import KEY_FILE_ENV, ApiKeyGuard

FIXED_FLAGS = ("--host", "--port", "--download-dir", "--api-key")
"""Flags vllmd always sets itself; never taken from ``serveArgs``."""

SECRET_FLAGS = ("--api-key", "--hf-token")
"""Flags whose value is a secret: shown as ``***`` wherever an argv is logged."""

GUARD_MIDDLEWARE = f"{ApiKeyGuard.__module__}.{ApiKeyGuard.__qualname__}"
"""What vLLM's ``--middleware`` imports: the guard, by the path it must keep."""


class LaunchSettings(Protocol):
    """What a launch needs besides the store; :class:`vllmd.settings.Settings` is one."""

    @property
    def vllm(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def auth(self) -> str: ...
    @property
    def models_dir(self) -> Path: ...
    @property
    def credentials_path(self) -> Path: ...


@dataclass(frozen=True, slots=True)
class Launch:
    """One way of starting vLLM: the full argv and the full environment."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(repr=False)  # values may be secrets

    @property
    def environ(self) -> dict[str, str]:
        """The environment as a mapping, for ``subprocess``."""
        return dict(self.env)

    @property
    def model(self) -> str | None:
        """The model being served (the first positional after ``serve``), if any."""
        return model_of(self.argv[2:])


@dataclass(frozen=True, slots=True)
class Plan:
    """The desired launch (``None``: no model selected) and the fixed flags dropped from it."""

    launch: Launch | None
    dropped: tuple[str, ...] = ()


def flag_name(arg: str) -> str:
    """The flag ``arg`` names, as vLLM reads it: ``--flag_name=value`` → ``--flag-name``.

    vLLM's parser takes underscores for dashes, so every comparison of flags goes through here.
    An argument that is not a long flag comes back unchanged (less any ``=value``).
    """
    name = arg.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


def split_fixed_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``args`` into those kept and the fixed flags (with their values) that are dropped.

    Both ``--flag value`` and ``--flag=value`` are recognised, with ``-`` or ``_`` in the name.
    """
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = flag_name(arg)
        if name in FIXED_FLAGS:
            if "=" in arg:
                dropped.append(name)
                i += 1
            else:
                dropped.append(name)
                has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
                i += 2 if has_value else 1
            continue
        kept.append(arg)
        i += 1
    return kept, dropped


def secrets_of(store: Store) -> list[str]:
    """The secret values a launch from ``store`` carries: ``serveEnv`` values, secret flags'."""
    found = [var.value for var in store.serveEnv]
    args = store.serveArgs
    for i, arg in enumerate(args):
        _, eq, value = arg.partition("=")
        if flag_name(arg) in SECRET_FLAGS:
            if eq:
                found.append(value)
            elif i + 1 < len(args):
                found.append(args[i + 1])
    return found


def shown_argv(argv: Sequence[str]) -> str:
    """``argv`` as one line for a log, with the values of :data:`SECRET_FLAGS` hidden."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        name, eq, _ = arg.partition("=")
        normal = flag_name(arg)
        if hide_next:
            shown.append("***")
            hide_next = False
        elif normal in SECRET_FLAGS and eq:
            shown.append(f"{name}=***")
        else:
            shown.append(arg)
            hide_next = normal in SECRET_FLAGS
    return " ".join(shown)


def model_of(serve_args: Sequence[str]) -> str | None:
    """The model named by ``serve_args``: the first positional, else the ``--model`` value."""
    if serve_args and not serve_args[0].startswith("-"):
        return serve_args[0]
    for i, arg in enumerate(serve_args):
        if arg == "--model" and i + 1 < len(serve_args):
            return serve_args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def plan_launch(
    store: Store | None,
    key: str,
    settings: LaunchSettings,
    base_env: Mapping[str, str],
    guard_dir: Path | None = None,
) -> Plan:
    """Compute the launch CONTRACT §2.4 describes, or no launch when no model is selected.

    With ``settings.auth == "guard"`` vLLM gets ``--middleware vllmd.guard.ApiKeyGuard`` and the
    key file's path instead of ``--api-key KEY``: the key is then not part of the launch, so a new
    key does not restart vLLM. ``guard_dir`` is the folder holding the guard module, put first on
    the child's ``PYTHONPATH``.
    """
    if store is None or not store.model_selected:
        return Plan(None)
    args, dropped = split_fixed_flags(store.serveArgs)
    argv = [settings.vllm, "serve", *args, "--no-enable-log-requests"]
    argv += ["--host", settings.host, "--port", str(settings.port)]
    argv += ["--download-dir", str(settings.models_dir)]
    if settings.auth == "guard":
        argv += ["--middleware", GUARD_MIDDLEWARE]
    else:
        argv += ["--api-key", key]

    env = dict(base_env)
    env["HF_HUB_CACHE"] = str(settings.models_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_VERBOSITY"] = "info"
    for var in store.serveEnv:
        env[var.name] = var.value
    env["VLLM_NO_USAGE_STATS"] = "1"
    if settings.auth == "guard":
        env[KEY_FILE_ENV] = str(settings.credentials_path)
        if guard_dir is not None:
            rest = env.get("PYTHONPATH")
            env["PYTHONPATH"] = f"{guard_dir}:{rest}" if rest else str(guard_dir)
    return Plan(Launch(tuple(argv), tuple(env.items())), tuple(dropped))
