"""One frozen settings object, built once from flags and environment, passed down.

Every option is spelled exactly once, in :data:`OPTIONS`: its flag, its environment variable, its
default and how its text is parsed. The command line adds the flags from here, and
:func:`settings_from` resolves each value as flag, else environment, else default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from vllmd.core.choices import AUTH_MODES, LOG_FORMATS, VARIANTS, AuthMode, LogFormat, Variant
from vllmd.core.errors import VllmdError

C = TypeVar("C", bound=str)


class SettingsError(VllmdError):
    """Raised when a flag or environment variable holds a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What the daemon and the commands need to know, resolved once."""

    data: Path = Path("/data")
    public: Path = Path("/public")
    run_dir: Path = Path("/run/vllmd")
    vllm: str = "vllm"
    host: str = "0.0.0.0"
    port: int = 8000
    loading_grace_s: float = 2_100.0
    loading_cap_s: float = 14_400.0
    stop_timeout_s: float = 30.0
    drain_timeout_s: float = 5.0
    variant: Variant = "cpu"
    ldconfig: bool = True
    log_format: LogFormat = "text"
    auth: AuthMode = "guard"
    watch_step_ms: int = 30

    @property
    def models_dir(self) -> Path:
        """The HuggingFace cache: ``DATA/models``."""
        return self.data / "models"

    @property
    def cache_dir(self) -> Path:
        """``DATA/cache``: the compile caches of vLLM, Inductor and Triton, kept across runs."""
        return self.data / "cache"

    @property
    def store_path(self) -> Path:
        """``DATA/store.json``: the serve arguments and the remembered selection."""
        return self.data / "store.json"

    @property
    def credentials_path(self) -> Path:
        """``PUBLIC/credentials.json``: the API key that dependents read."""
        return self.public / "credentials.json"

    @property
    def health_path(self) -> Path:
        """``RUN_DIR/health.json``: what the daemon last said about its health."""
        return self.run_dir / "health.json"


def _choice(allowed: tuple[C, ...]) -> Callable[[str], C]:
    def parse(text: str) -> C:
        for choice in allowed:
            if text == choice:
                return choice
        raise ValueError(f"expected one of {', '.join(allowed)}")

    return parse


def _metavar(allowed: tuple[str, ...]) -> str:
    return "|".join(allowed)


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65_536:
        raise ValueError("expected a port number between 1 and 65535")
    return port


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses NaN
        raise ValueError("expected a number of seconds, 0 or more")
    return value


def _millis(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000:
        raise ValueError("expected milliseconds between 1 and 10000")
    return value


def _path(text: str) -> Path:
    if not text:
        raise ValueError("expected a path")
    return Path(text).expanduser().absolute()


def _flag_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag, environment variable, parser and help text."""

    dest: str
    flags: tuple[str, ...]
    env: str
    parse: Callable[[str], object]
    help: str
    metavar: str | None = None
    store_false: bool = False


OPTIONS: dict[str, Option] = {
    o.dest: o
    for o in (
        Option("data", ("--data",), "VLLMD_DATA", _path, "data volume", "DIR"),
        Option("public", ("--public",), "VLLMD_PUBLIC", _path, "public volume", "DIR"),
        Option("run_dir", ("--run-dir",), "VLLMD_RUN_DIR", _path, "runtime folder", "DIR"),
        Option("vllm", ("--vllm",), "VLLMD_VLLM", str, "the vLLM program", "PROGRAM"),
        Option("host", ("--host",), "VLLMD_HOST", str, "vLLM's listen host", "HOST"),
        Option("port", ("--port",), "VLLMD_PORT", _port, "vLLM's listen port", "PORT"),
        Option(
            "loading_grace_s",
            ("--loading-grace",),
            "VLLMD_LOADING_GRACE",
            _seconds,
            "seconds vLLM may take to come up before health says failure",
            "S",
        ),
        Option(
            "loading_cap_s",
            ("--loading-cap",),
            "VLLMD_LOADING_CAP",
            _seconds,
            "hard cap in seconds on loading while a download keeps progressing",
            "S",
        ),
        Option(
            "stop_timeout_s",
            ("--stop-timeout",),
            "VLLMD_STOP_TIMEOUT",
            _seconds,
            "seconds between SIGTERM and SIGKILL when stopping vLLM",
            "S",
        ),
        Option(
            "drain_timeout_s",
            ("--drain-timeout",),
            "VLLMD_DRAIN_TIMEOUT",
            _seconds,
            "seconds vLLM may spend finishing in-flight requests on a planned stop "
            "(its --shutdown-timeout); the stop timeout counts from the end of it",
            "S",
        ),
        Option(
            "variant",
            ("--variant",),
            "VLLMD_VARIANT",
            _choice(VARIANTS),
            "image variant",
            _metavar(VARIANTS),
        ),
        Option(
            "ldconfig",
            ("--no-ldconfig",),
            "VLLMD_LDCONFIG",
            _flag_bool,
            "skip the ldconfig run at start",
            store_false=True,
        ),
        Option(
            "log_format",
            ("--log-format",),
            "VLLMD_LOG_FORMAT",
            _choice(LOG_FORMATS),
            "log line format",
            _metavar(LOG_FORMATS),
        ),
        Option(
            "auth",
            ("--auth",),
            "VLLMD_AUTH",
            _choice(AUTH_MODES),
            "how vLLM checks the key: guard (live key, no restart on rotation) or flag (--api-key)",
            _metavar(AUTH_MODES),
        ),
        Option(
            "watch_step_ms",
            ("--watch-step-ms",),
            "VLLMD_WATCH_STEP_MS",
            _millis,
            "polling fallback only: how often watchfiles looks at what it collected",
            "MS",
        ),
    )
}

VOLUME_OPTIONS = ("data", "public", "run_dir")
RUN_OPTIONS = (
    "vllm",
    "host",
    "port",
    "loading_grace_s",
    "loading_cap_s",
    "stop_timeout_s",
    "drain_timeout_s",
    "variant",
    "ldconfig",
    "log_format",
    "auth",
    "watch_step_ms",
)

_DEFAULTS = Settings()


def add_options(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Add the flags of the named options to ``parser`` (values resolve in settings_from)."""
    for name in names:
        option = OPTIONS[name]
        default = getattr(_DEFAULTS, name)
        help_text = f"{option.help} (env {option.env}; default {default})"
        if option.store_false:
            parser.add_argument(
                *option.flags, dest=name, action="store_const", const=False, help=help_text
            )
        else:
            parser.add_argument(*option.flags, dest=name, metavar=option.metavar, help=help_text)


def settings_from(
    namespace: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Resolve every setting as flag, else environment variable, else default."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for field in fields(Settings):
        option = OPTIONS[field.name]
        given = getattr(namespace, field.name, None) if namespace is not None else None
        if isinstance(given, bool):
            values[field.name] = given
            continue
        if given is not None:
            source, text = option.flags[0], str(given)
        elif option.env in environ:
            source, text = option.env, environ[option.env]
        else:
            continue
        try:
            values[field.name] = option.parse(text)
        except ValueError as exc:
            raise SettingsError(f"{source}={text!r} is not valid: {exc}") from exc
    return Settings(**values)  # type: ignore[arg-type]
