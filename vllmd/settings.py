"""One frozen settings object, built once from flags and environment, passed down.

Every option is spelled once, in :mod:`vllmd.options` (flag, environment variable, default, the
lists it belongs to); each :class:`Settings` field carries its spelling and the parser of its text.
:data:`OPTIONS` and the lists the command line adds (:func:`option_names`) derive from the fields,
and :func:`settings_from` resolves each value as flag, else environment, else default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Generic, TypeVar

from vllmd import options
from vllmd.apikey import KEY_FILE
from vllmd.core.choices import AUTH_MODES, LOG_FORMATS, VARIANTS, AuthMode, LogFormat, Variant
from vllmd.core.errors import VllmdError
from vllmd.options import Spelling

C = TypeVar("C", bound=str)
T = TypeVar("T")


class SettingsError(VllmdError):
    """Raised when a flag or environment variable holds a value that cannot be used."""


class _Choice(Generic[C]):
    """Parses one of ``allowed`` exactly; its ``metavar`` lists them for ``--help``."""

    def __init__(self, allowed: tuple[C, ...]) -> None:
        self.allowed = allowed
        self.metavar = "|".join(allowed)

    def __call__(self, text: str) -> C:
        for choice in self.allowed:
            if text == choice:
                return choice
        raise ValueError(f"expected one of {', '.join(self.allowed)}")


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
    """One setting: its spelling, the parser of its text, and its value's name in ``--help``."""

    dest: str
    spelling: Spelling
    parse: Callable[[str], object]
    metavar: str | None

    @property
    def flags(self) -> tuple[str, ...]:
        """The command-line flags."""
        return (self.spelling.flag,)

    @property
    def env(self) -> str:
        """The environment variable."""
        return self.spelling.env

    @property
    def store_false(self) -> bool:
        """Whether the flag is a switch that turns a default-true option off (``--no-...``)."""
        return self.spelling.flag.startswith("--no-")


def _option(spelling: Spelling, parse: Callable[[str], T]) -> T:
    """A Settings field for ``spelling``: its default parsed from the spelling's text."""
    default = parse(spelling.default)
    return field(default=default, metadata={"spelling": spelling, "parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    """What the daemon and the commands need to know, resolved once.

    Each field carries its option (:func:`_option`): the spelling from :mod:`vllmd.options` and
    the parser of its text; the default is that parser applied to the spelling's default.
    """

    data: Path = _option(options.DATA, _path)
    public: Path = _option(options.PUBLIC, _path)
    run_dir: Path = _option(options.RUN_DIR, _path)
    vllm: str = _option(options.VLLM, str)
    host: str = _option(options.HOST, str)
    port: int = _option(options.PORT, _port)
    loading_grace_s: float = _option(options.LOADING_GRACE, _seconds)
    loading_cap_s: float = _option(options.LOADING_CAP, _seconds)
    stop_timeout_s: float = _option(options.STOP_TIMEOUT, _seconds)
    drain_timeout_s: float = _option(options.DRAIN_TIMEOUT, _seconds)
    variant: Variant = _option(options.VARIANT, _Choice(VARIANTS))
    ldconfig: bool = _option(options.LDCONFIG, _flag_bool)
    fetch: bool = _option(options.FETCH, _flag_bool)
    log_format: LogFormat = _option(options.LOG_FORMAT, _Choice(LOG_FORMATS))
    auth: AuthMode = _option(options.AUTH, _Choice(AUTH_MODES))
    watch_step_ms: int = _option(options.WATCH_STEP, _millis)

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
        return self.data / options.STORE_FILE

    @property
    def credentials_path(self) -> Path:
        """``PUBLIC/credentials.json``: the API key that dependents read."""
        return self.public / KEY_FILE

    @property
    def health_path(self) -> Path:
        """``RUN_DIR/health.json``: what the daemon last said about its health."""
        return self.run_dir / options.HEALTH_FILE


OPTIONS: dict[str, Option] = {
    f.name: Option(
        f.name,
        f.metadata["spelling"],
        f.metadata["parse"],
        f.metadata["spelling"].metavar or getattr(f.metadata["parse"], "metavar", None),
    )
    for f in fields(Settings)
}
"""Every setting's option, by field name, in the fields' order."""


def option_names(group: str) -> tuple[str, ...]:
    """The settings whose option belongs to ``group`` (:mod:`vllmd.options`), in field order."""
    return tuple(name for name, option in OPTIONS.items() if group in option.spelling.groups)


VOLUME_OPTIONS = option_names(options.VOLUMES)
RUN_OPTIONS = option_names(options.RUN)
DEMO_OPTIONS = option_names(options.DEMO)
DETECT_OPTIONS = option_names(options.DETECT)

DEMO_DEFAULTS: Mapping[str, str] = {
    "data": "./.vllmd/data",
    "public": "./.vllmd/public",
    "run_dir": "./.vllmd/run",
}
"""``vllmd demo``'s own defaults for the volumes: folders in the current one, not the image's."""

_DEFAULTS = Settings()


def add_options(
    parser: argparse.ArgumentParser, names: Iterable[str], shown: Mapping[str, str] | None = None
) -> None:
    """Add the flags of the named options to ``parser`` (values resolve in settings_from).

    ``shown``: the defaults a command applies itself, by name, shown instead of the settings'.
    """
    for name in names:
        option = OPTIONS[name]
        default = (shown or {}).get(name, getattr(_DEFAULTS, name))
        help_text = f"{option.spelling.help} (env {option.env}; default {default})"
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
    for name, option in OPTIONS.items():
        given = getattr(namespace, name, None) if namespace is not None else None
        if isinstance(given, bool):
            values[name] = given
            continue
        if given is not None:
            source, text = option.flags[0], str(given)
        elif option.env in environ:
            source, text = option.env, environ[option.env]
        else:
            continue
        try:
            values[name] = option.parse(text)
        except ValueError as exc:
            raise SettingsError(f"{source}={text!r} is not valid: {exc}") from exc
    return Settings(**values)  # type: ignore[arg-type]
