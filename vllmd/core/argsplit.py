"""Custom ``vllm serve`` arguments and environment variables, as people type them.

The custom text is split like a POSIX shell, without any expansion (``shlex`` in POSIX mode): quotes
and backslashes work, so a JSON value can be quoted; text without quotes or backslashes splits
exactly as on whitespace (CONTRACT §4, a deliberate difference from the spec's whitespace split).
Pure: no I/O.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from vllmd.core.errors import VllmdError
from vllmd.core.launch import (
    fixed_flag_of,
    hide_secrets,
    model_of,
    secret_flag_of,
    secret_values,
)
from vllmd.core.masking import MASK
from vllmd.core.schema import ENV_NAME_PATTERN, EnvVar

WHY_FIXED = {
    "--host": "vLLM always listens on the address vllmd gives it",
    "--port": "vLLM always listens on the port StartOS exposes (8000)",
    "--download-dir": "models always go to the data volume's cache (DATA/models)",
    "--api-key": "the key always comes from credentials.json (see the Get API Key action)",
}


class ArgsError(VllmdError):
    """Raised when custom arguments or environment variables cannot be used; says why."""


def split_args(text: str) -> list[str]:
    """Split ``text`` like a POSIX shell without expansion; ArgsError on an unterminated quote."""
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        # shlex says "No closing quotation" or "No escaped character".
        raise ArgsError(
            f"the custom arguments cannot be split: {str(exc).lower()}. Close every quote you "
            "open; to pass a quote character itself, escape it with a backslash"
        ) from exc


def fixed_flags_in(args: Sequence[str]) -> list[str]:
    """The fixed flags in ``args``, in ``--flag value`` and ``--flag=value`` form.

    vLLM reads ``--api_key`` as ``--api-key`` and expands ``--hos`` to ``--host``, so underscores
    count as dashes here and a prefix of a fixed flag counts as that flag.
    """
    found = []
    for arg in args:
        name = fixed_flag_of(arg)
        if name is not None and name not in found:
            found.append(name)
    return found


def check_custom_args(args: Sequence[str]) -> None:
    """Refuse custom arguments vllmd cannot serve: empty, no model, or a fixed flag."""
    if not args:
        raise ArgsError(
            "the custom arguments are empty: give the model id first, then any flags, for "
            "example: Qwen/Qwen3-0.6B --max-model-len 8192"
        )
    for n, arg in enumerate(args, 1):
        if "\0" in arg:
            raise ArgsError(
                f"custom argument number {n} holds a NUL character, which no program argument "
                "can carry. Remove it"
            )
    fixed = fixed_flags_in(args)
    if fixed:
        reasons = "; ".join(f"{flag}: {WHY_FIXED[flag]}" for flag in fixed)
        them = "it" if len(fixed) == 1 else "them"
        raise ArgsError(
            f"{', '.join(fixed)} cannot be set here, vllmd sets {them} itself ({reasons}). "
            f"Remove {them} from the custom arguments"
        )
    if model_of(args) is None:
        raise ArgsError(
            f"the custom arguments start with {args[0]!r}, not a model: give the model id first "
            "(or --model ID), for example: Qwen/Qwen3-0.6B --max-model-len 8192"
        )


def parse_custom(text: str) -> list[str]:
    """The ``serveArgs`` for the custom ``text``, or ArgsError that says what to fix."""
    args = split_args(text)
    check_custom_args(args)
    return args


def parse_env(
    items: Sequence[str], *, option: str = "--env", counted: str = "number"
) -> tuple[EnvVar, ...]:
    """``NAME=VALUE`` items as environment variables; ArgsError names the bad one, never a value.

    ``option`` and ``counted`` say where the items came from in errors (``--env number 2``,
    ``--env-stdin line 2``).
    """
    env: list[EnvVar] = []
    names: set[str] = set()
    for n, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if not sep:
            # Not echoed: a value pasted without its name would otherwise land in the output.
            raise ArgsError(
                f"{option} {counted} {n} has no '=': expected NAME=VALUE (an empty value is NAME=)"
            )
        if not re.fullmatch(ENV_NAME_PATTERN, name):
            # Not echoed either: "TOKEN=with=equals" pasted alone would show half the secret.
            raise ArgsError(
                f"{option} {counted} {n}: the text before '=' is not a valid variable name "
                f"(letters, digits and underscores, not starting with a digit; {len(name)} "
                "characters given, not shown in case a value was pasted there)"
            )
        if name in names:
            raise ArgsError(f"{option} {name}: given twice; give each variable once")
        if "\0" in value:
            raise ArgsError(
                f"{option} {name}: the value holds a NUL character, which no environment "
                "variable can carry"
            )
        names.add(name)
        env.append(EnvVar(name=name, value=value))
    return tuple(env)


def join_args(args: Sequence[str]) -> str:
    """``args`` as one line a POSIX shell (and :func:`split_args`) splits back the same way."""
    return shlex.join(args)


def shown_custom(text: str) -> str:
    """The custom argument text as a form may show it: secret flags' values as ``***``.

    Text that no longer splits (a hand-edited store) is not shown at all: it may hold a secret.
    """
    try:
        return join_args(hide_secrets(split_args(text))) if text else ""
    except ArgsError:
        return ""


def keep_masked_secrets(args: Sequence[str], stored: Sequence[str]) -> list[str]:
    """``args`` with each secret flag's ``***`` replaced by that flag's value in ``stored``.

    The form shows secret values as ``***`` (:func:`shown_custom`); submitted unchanged, they
    mean "keep what is stored". Raises :class:`ArgsError` when nothing is stored to keep.
    """
    known = dict(secret_values(stored))

    def kept(flag: str, value: str) -> str:
        if value != MASK:
            return value
        if flag in known:
            return known[flag]
        raise ArgsError(
            f"{flag} is {MASK}, the hidden value the form shows, and no value is stored to keep",
            f"Type the real value after {flag}.",
        )

    out: list[str] = []
    pending: str | None = None
    for arg in args:
        if pending is not None:
            out.append(kept(pending, arg))
            pending = None
            continue
        flag = secret_flag_of(arg)
        name, eq, value = arg.partition("=")
        if flag is not None and eq:
            out.append(f"{name}={kept(flag, value)}")
            continue
        pending = flag
        out.append(arg)
    return out
