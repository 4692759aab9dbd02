"""The desired launch: vLLM's argv and environment, computed from the store and the key.

Pure: no I/O. The reconciler compares the :class:`Launch` this returns with the one that runs;
equal values mean nothing to do, so everything that should restart vLLM when it changes is in it,
and nothing else is. Whether the launch goes without the hub (:data:`OFFLINE_ENV`) is carried
beside it and not compared: a model that became fully cached (or left the cache) while vLLM
serves it is no reason to restart it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vllmd.core.choices import AuthMode, Variant
from vllmd.core.schema import Store
from vllmd.guard import KEY_FILE_ENV, ApiKeyGuard

FIXED_FLAGS = ("--host", "--port", "--download-dir", "--api-key")
"""Flags vllmd always sets itself; never taken from ``serveArgs``."""

SECRET_FLAGS = ("--api-key", "--hf-token")
"""Flags whose value is a secret: shown as ``***`` wherever an argv is logged."""

GUARD_MIDDLEWARE = f"{ApiKeyGuard.__module__}.{ApiKeyGuard.__qualname__}"
"""What vLLM's ``--middleware`` imports: the guard, by the path it must keep."""

DRAIN_FLAG = "--shutdown-timeout"
"""vLLM's drain: on SIGTERM it refuses new requests and finishes those in flight for up to this
many seconds (its default, 0, aborts them). vllmd passes ``--drain-timeout`` here unless
``serveArgs`` set it themselves."""

QUIET_FLAG = "--disable-access-log-for-endpoints"
"""vLLM's list of paths kept out of its access log (comma-separated)."""

PROBE_PATH = "/health"
"""What the daemon's probe asks every 2 s: kept out of the access log, so only users' requests
are logged (43,000 lines a day of our own noise otherwise)."""

COMPILE_CACHES = (
    ("VLLM_CACHE_ROOT", "vllm"),
    ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
    ("TRITON_CACHE_DIR", "triton"),
)
"""The compiled-kernel caches, as (variable, folder under ``DATA/cache``): their defaults are in
the container's home and ``/tmp``, which a recreated container does not have, so every model
would pay its compilation again after an update or a restore."""


GPU_CACHES = (
    ("CUDA_CACHE_PATH", "cuda"),
    ("FLASHINFER_WORKSPACE_BASE", "flashinfer"),
)
"""The GPU JIT caches, as (variable, folder under ``DATA/cache``), kept on the volume like the
compile caches: the CUDA driver's PTX cache (default ``~/.nv/ComputeCache``) and FlashInfer's
JIT kernels (FlashInfer keeps them in ``$FLASHINFER_WORKSPACE_BASE/.cache/flashinfer``, with
the home folder as the default base)."""

CUDA_CACHE_MAXSIZE = str(4 * 1024**3)
"""The CUDA driver's cache limit (its default, 256 MiB, evicts a large model's kernels)."""

OFFLINE_ENV = ("HF_HUB_OFFLINE", "1")
"""Set for a model whose files vllmd fetched completely: a restart, a crash restart or a
recreated container then needs no hub. Placed before ``serveEnv``, which may override it."""

READY_TIMEOUT_ENV = "VLLM_ENGINE_READY_TIMEOUT_S"
"""vLLM's own deadline for its engine to come up (default 600 s, whole seconds): set to the
loading cap, so that vLLM does not cut short a load that vllmd's health still calls loading."""

CPU_ENV = (("VLLM_USE_AOT_COMPILE", "0"),)
"""Defaults for the ``cpu`` variant only, before ``serveEnv`` (a user's value wins). vLLM 0.32's
CPU build saves an ahead-of-time compiled artifact that it then fails to load on the next start
(``'function' object has no attribute 'finalize_loading'``) and compiles everything again; without
it, Inductor's cache under ``DATA/cache`` is reused: a warm start took 0.43x the cold one, against
0.85x with the artifact (``python -m bench --real``)."""


class LaunchSettings(Protocol):
    """What a launch needs besides the store; :class:`vllmd.settings.Settings` is one."""

    @property
    def vllm(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def auth(self) -> AuthMode: ...
    @property
    def models_dir(self) -> Path: ...
    @property
    def cache_dir(self) -> Path: ...
    @property
    def credentials_path(self) -> Path: ...
    @property
    def drain_timeout_s(self) -> float: ...
    @property
    def loading_cap_s(self) -> float: ...
    @property
    def variant(self) -> Variant: ...


@dataclass(frozen=True, slots=True)
class Launch:
    """One way of starting vLLM: the full argv and the full environment.

    ``offline`` holds what a launch without the hub adds to ``env`` (:data:`OFFLINE_ENV`, unless
    ``serveEnv`` names it); it is not compared, so it never restarts what runs.
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(repr=False)  # values may be secrets
    offline: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def environ(self) -> dict[str, str]:
        """The environment as a mapping, for ``subprocess``."""
        return dict(self.env + self.offline)

    @property
    def hub_env(self) -> dict[str, str]:
        """The environment without the offline rule: what a fetch from the hub runs with."""
        return dict(self.env)

    @property
    def model(self) -> str | None:
        """The model being served (the first positional after ``serve``), if any."""
        return model_of(self.argv[2:])

    @property
    def drain_s(self) -> float:
        """How long vLLM drains on SIGTERM: the last ``--shutdown-timeout`` in argv, else 0."""
        values = flag_values(self.argv[2:], DRAIN_FLAG)
        try:
            return max(0.0, float(values[-1])) if values else 0.0
        except ValueError:  # vLLM refuses such a value and exits: there is nothing to drain
            return 0.0


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


def _named(arg: str, flags: Sequence[str]) -> str | None:
    """The one of ``flags`` that ``arg`` names, exactly or abbreviated; None for none."""
    name = flag_name(arg)
    if not name.startswith("--") or len(name) <= 2:
        return None
    if name in flags:
        return name
    # vLLM's parser (argparse) expands a unique prefix: "--hos" is "--host" to it.
    return next((flag for flag in flags if flag.startswith(name)), None)


def fixed_flag_of(arg: str) -> str | None:
    """The fixed flag ``arg`` names (``--hos=x`` names ``--host``), or None."""
    return _named(arg, FIXED_FLAGS)


def secret_flag_of(arg: str) -> str | None:
    """The secret flag ``arg`` names (``--hf-tok`` names ``--hf-token``), or None."""
    return _named(arg, SECRET_FLAGS)


def split_fixed_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``args`` into those kept and the fixed flags (with their values) that are dropped.

    Both ``--flag value`` and ``--flag=value`` are recognised, with ``-`` or ``_`` in the name.
    """
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = fixed_flag_of(arg)
        if name is not None:
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


def take_flag(args: Sequence[str], flag: str) -> tuple[list[str], list[str]]:
    """Split ``args`` into those without ``flag`` and the values ``flag`` had, in order.

    Both ``--flag value`` and ``--flag=value`` are recognised, with ``-`` or ``_`` in the name.
    """
    kept: list[str] = []
    values: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if flag_name(arg) != flag:
            kept.append(arg)
            i += 1
        elif "=" in arg:
            values.append(arg.split("=", 1)[1])
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            values.append(args[i + 1])
            i += 2
        else:
            i += 1
    return kept, values


def flag_values(args: Sequence[str], flag: str) -> list[str]:
    """The values ``flag`` has in ``args``, in order (argparse keeps the last)."""
    return take_flag(args, flag)[1]


def quiet_paths(given: Sequence[str]) -> str:
    """The probe's path first, then every path the user gave, once each, comma-separated."""
    paths = [PROBE_PATH]
    for value in given:
        for path in value.split(","):
            path = path.strip()
            if path and path not in paths:
                paths.append(path)
    return ",".join(paths)


def _seconds_arg(seconds: float) -> str:
    """``5.0`` → ``"5"``; vLLM's ``--shutdown-timeout`` takes whole seconds (rounded up)."""
    return str(math.ceil(seconds))


def secrets_of(store: Store) -> list[str]:
    """The secret values a launch from ``store`` carries: ``serveEnv`` values, secret flags'."""
    return [var.value for var in store.serveEnv] + [v for _, v in secret_values(store.serveArgs)]


def secret_values(args: Sequence[str]) -> list[tuple[str, str]]:
    """(flag, value) for every secret flag in ``args``, in either form, abbreviations included."""
    found: list[tuple[str, str]] = []
    pending: str | None = None
    for arg in args:
        if pending is not None:
            found.append((pending, arg))
            pending = None
            continue
        flag = secret_flag_of(arg)
        _, eq, value = arg.partition("=")
        if flag is not None and eq:
            found.append((flag, value))
        else:
            pending = flag
    return found


def hide_secrets(args: Sequence[str]) -> list[str]:
    """``args`` with the values of :data:`SECRET_FLAGS` (abbreviated ones too) as ``***``."""
    shown: list[str] = []
    hide_next = False
    for arg in args:
        name, eq, _ = arg.partition("=")
        secret = secret_flag_of(arg) is not None
        if hide_next:
            shown.append("***")
            hide_next = False
        elif secret and eq:
            shown.append(f"{name}=***")
        else:
            shown.append(arg)
            hide_next = secret
    return shown


def shown_argv(argv: Sequence[str]) -> str:
    """``argv`` as one line for a log, with the values of :data:`SECRET_FLAGS` hidden."""
    return " ".join(hide_secrets(argv))


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
    *,
    offline: bool = False,
) -> Plan:
    """Compute the launch CONTRACT §2.4 describes, or no launch when no model is selected.

    ``offline``: the model's files were fetched completely, so vLLM gets ``HF_HUB_OFFLINE=1``
    (after the daemon's own environment, before ``serveEnv``, which may override it).

    With ``settings.auth == "guard"`` vLLM gets ``--middleware vllmd.guard.ApiKeyGuard`` and the
    key file's path instead of ``--api-key KEY``: the key is then not part of the launch, so a new
    key does not restart vLLM. ``guard_dir`` is the folder holding the guard module, put first on
    the child's ``PYTHONPATH``.
    """
    if store is None or not store.model_selected:
        return Plan(None)
    args, dropped = split_fixed_flags(store.serveArgs)
    args, quiet = take_flag(args, QUIET_FLAG)
    argv = [settings.vllm, "serve", *args, "--no-enable-log-requests"]
    if not flag_values(args, DRAIN_FLAG):  # theirs wins
        argv += [DRAIN_FLAG, _seconds_arg(settings.drain_timeout_s)]
    argv += [QUIET_FLAG, quiet_paths(quiet)]
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
    for name, folder in COMPILE_CACHES + GPU_CACHES:  # before serveEnv: a user's value wins
        env[name] = str(settings.cache_dir / folder)
    env["CUDA_CACHE_MAXSIZE"] = CUDA_CACHE_MAXSIZE
    env[READY_TIMEOUT_ENV] = _seconds_arg(settings.loading_cap_s)
    if settings.variant == "cpu":
        env.update(CPU_ENV)
    for var in store.serveEnv:
        env[var.name] = var.value
    env["VLLM_NO_USAGE_STATS"] = "1"
    if settings.auth == "guard":
        env[KEY_FILE_ENV] = str(settings.credentials_path)
        if guard_dir is not None:
            rest = env.get("PYTHONPATH")
            env["PYTHONPATH"] = f"{guard_dir}:{rest}" if rest else str(guard_dir)
    # Over the daemon's own value (Launch.environ merges it last), under serveEnv's.
    given = {var.name for var in store.serveEnv}
    extra = (OFFLINE_ENV,) if offline and OFFLINE_ENV[0] not in given else ()
    return Plan(Launch(tuple(argv), tuple(env.items()), extra), tuple(dropped))
