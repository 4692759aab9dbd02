"""The ``vllmd action …`` and ``vllmd hardware`` subcommands: options, and one way to fail.

Every action prints its result on stdout (StartOS JSON, or ``--text`` for people) and exits 0, or
prints what was wrong, where, and what to do on stderr and exits 1, without a traceback. The
modules that do the work are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from vllmd.actions.requests import (
    DeleteModelCache,
    EnvChange,
    GetApiKey,
    SetModel,
    SetModelMode,
    StatedHardware,
)
from vllmd.core.choices import TIERS
from vllmd.core.errors import VllmdError
from vllmd.settings import DETECT_OPTIONS, Settings, add_options

if TYPE_CHECKING:
    from vllmd.actions.result import ActionError

EXIT_OK = 0
EXIT_ERROR = 1
ENV_STDIN_LIMIT_BYTES = 1 << 20
"""More than this on standard input for ``--env-stdin`` is refused rather than read."""

Request = TypeVar("Request")


class Printable(Protocol):
    """What an action returns: an action result or a form, printable both ways."""

    def to_json(self) -> str: ...
    def to_text(self) -> str: ...


def _error(message: str) -> ActionError:
    from vllmd.actions.result import ActionError

    return ActionError(message)


def _hardware_of(args: argparse.Namespace) -> StatedHardware:
    return StatedHardware(tier=args.tier, memory_gb=args.memory_gb, gpus=args.gpus)


def read_env_lines(stream: BinaryIO) -> tuple[str, ...]:
    """``NAME=VALUE`` lines from ``stream`` (UTF-8), empty lines left out; never echoes a value."""
    data = stream.read(ENV_STDIN_LIMIT_BYTES + 1)
    if len(data) > ENV_STDIN_LIMIT_BYTES:
        raise _error(
            f"--env-stdin: more than {ENV_STDIN_LIMIT_BYTES:,} bytes on standard input; give "
            "one NAME=VALUE line per variable"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(
            f"--env-stdin: standard input is not UTF-8 text (byte {exc.start}); give one "
            "NAME=VALUE line per variable"
        ) from None
    return tuple(line for line in text.split("\n") if line)


def set_model_request(args: argparse.Namespace, stdin: BinaryIO) -> SetModel:
    """The typed ``set-model`` request; standard input is read only for ``--env-stdin``."""
    chosen: list[tuple[SetModelMode, str]] = []
    if args.preset is not None:
        chosen.append(("preset", args.preset))
    if args.custom is not None:
        chosen.append(("custom", args.custom))
    if args.list:
        chosen.append(("list", ""))
    if args.form:
        chosen.append(("form", ""))
    if len(chosen) != 1:
        raise _error(
            "give exactly one of --preset ID, --custom ARGS, --list or --form "
            "(run set-model --list to see the presets)"
        )
    given = [
        flag
        for flag, on in (
            ("--env", args.env is not None),
            ("--env-stdin", args.env_stdin),
            ("--clear-env", args.clear_env),
        )
        if on
    ]
    if len(given) > 1:
        raise _error(f"{' and '.join(given)} contradict each other: give one of them")
    env = EnvChange()
    if args.env is not None:
        env = EnvChange(tuple(args.env), "--env")
    elif args.env_stdin:
        env = EnvChange(read_env_lines(stdin), "--env-stdin")
    elif args.clear_env:
        env = EnvChange((), "--clear-env")
    mode, value = chosen[0]
    return SetModel(mode, value, env, _hardware_of(args), bool(args.force))


def delete_model_cache_request(args: argparse.Namespace) -> DeleteModelCache:
    """The typed ``delete-model-cache`` request."""
    if args.form and (args.model is not None or args.compile_cache):
        raise _error(
            "--form lists the cache and deletes nothing: leave --model and --compile-cache out"
        )
    if args.compile_cache and args.model is not None:
        raise _error("--compile-cache and --model delete different things: give one at a time")
    return DeleteModelCache(
        model=args.model,
        form=bool(args.form),
        force=bool(args.force),
        compile_cache=bool(args.compile_cache),
    )


def _describe_os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return (
        f"{where}{exc.strerror or exc}. Check that the volume is mounted and that vllmd may "
        "read and write it"
    )


def _run(
    name: str,
    build: Callable[[], Request],
    action: Callable[[Request, Settings], Printable],
    settings: Settings,
    text: bool,
) -> int:
    """Build the request, run ``action`` and print its result; a user error goes to stderr
    with exit 1."""
    try:
        result = action(build(), settings)
    except VllmdError as exc:
        print(f"vllmd {name}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"vllmd {name}: {_describe_os_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(result.to_text() if text else result.to_json())
    return EXIT_OK


def _get_api_key(args: argparse.Namespace, settings: Settings) -> int:
    from vllmd.actions.get_api_key import get_api_key

    return _run("action get-api-key", GetApiKey, get_api_key, settings, args.text)


def _set_model(args: argparse.Namespace, settings: Settings) -> int:
    from vllmd.actions.set_model import set_model

    def build() -> SetModel:
        return set_model_request(args, sys.stdin.buffer)

    return _run("action set-model", build, set_model, settings, args.text)


def _delete_model_cache(args: argparse.Namespace, settings: Settings) -> int:
    from vllmd.actions.delete_model_cache import delete_model_cache

    def build() -> DeleteModelCache:
        return delete_model_cache_request(args)

    return _run("action delete-model-cache", build, delete_model_cache, settings, args.text)


def _hardware(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec

    from vllmd.hardware.tiers import detect

    found = detect(settings.variant)  # never raises: a failure is the cpu tier with a reason
    if args.text:
        sys.stdout.write(found.to_text())
    else:
        sys.stdout.write(msgspec.json.encode(found.to_builtins()).decode() + "\n")
    return EXIT_OK


def register(sub: Any, volumes: argparse.ArgumentParser) -> None:
    """Add ``action`` (with ``get-api-key``, ``set-model``, ``delete-model-cache``) and
    ``hardware`` to the subcommands ``sub``; ``volumes`` carries ``--data/--public/--run-dir``."""
    text = argparse.ArgumentParser(add_help=False)
    text.add_argument(
        "--text", action="store_true", help="print a readable form instead of StartOS JSON"
    )

    action = sub.add_parser(
        "action", help="run a StartOS action (prints an action result as JSON on stdout)"
    )
    actions = action.add_subparsers(dest="action", required=True, metavar="ACTION")

    get = actions.add_parser(
        "get-api-key",
        parents=[volumes, text],
        help="print the API key (created first when missing or invalid)",
    )
    get.set_defaults(func=_get_api_key)

    choose = actions.add_parser(
        "set-model",
        parents=[volumes, text],
        help="choose the model vLLM serves: a preset, custom arguments, or --list the choices",
    )
    what = choose.add_argument_group("what to serve (give one)")
    what.add_argument("--preset", metavar="ID", help="a preset id from --list")
    what.add_argument(
        "--custom",
        metavar="ARGS",
        help="`vllm serve` arguments, model id first, split like a POSIX shell (quotes work)",
    )
    what.add_argument(
        "--list",
        action="store_true",
        help="list every preset, whether it fits this hardware and why, the default and the "
        "current selection; writes nothing",
    )
    what.add_argument(
        "--form",
        action="store_true",
        help="the same as --list as one JSON object for the StartOS package (not an action "
        "result); writes nothing",
    )
    env = choose.add_argument_group("environment of the vLLM process (omitted: kept as it is)")
    env.add_argument(
        "--env",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="a variable for vLLM, e.g. HF_TOKEN=… for a gated model; repeat for more; given, "
        "the list replaces the one stored",
    )
    env.add_argument(
        "--env-stdin",
        action="store_true",
        help="read NAME=VALUE lines from standard input instead (empty lines ignored), so that "
        "values never appear on a command line; replaces the stored list like --env",
    )
    env.add_argument("--clear-env", action="store_true", help="remove every stored variable")
    hw = choose.add_argument_group("hardware (default: detected)")
    tiers = ", ".join(TIERS)
    hw.add_argument(
        "--tier", metavar="TIER", help=f"fit to this tier instead of detecting one: {tiers}"
    )
    hw.add_argument("--memory-gb", metavar="N", help="memory per GPU (or of the system) in GB")
    hw.add_argument("--gpus", metavar="K", help="identical GPUs (default 1)")
    choose.add_argument(
        "--force",
        action="store_true",
        help="when store.json is unreadable, move it aside (store.json.invalid-<UTC time>) and "
        "write a new one",
    )
    add_options(choose, DETECT_OPTIONS)
    choose.set_defaults(func=_set_model)

    delete = actions.add_parser(
        "delete-model-cache",
        parents=[volumes, text],
        help="list cached models with their sizes, or delete one with --model",
    )
    delete.add_argument("--model", metavar="ORG/NAME", help="the HuggingFace id to delete")
    delete.add_argument(
        "--form",
        action="store_true",
        help="list the cache as one JSON object for the StartOS package; deletes nothing",
    )
    delete.add_argument(
        "--force", action="store_true", help="delete the model even when it is the selected one"
    )
    delete.add_argument(
        "--compile-cache",
        action="store_true",
        help="delete the compile cache (DATA/cache: vLLM's, Inductor's and Triton's kernels)",
    )
    delete.set_defaults(func=_delete_model_cache)

    hardware = sub.add_parser(
        "hardware", parents=[text], help="print the detected hardware tier, GPUs and memory budget"
    )
    add_options(hardware, DETECT_OPTIONS)
    hardware.set_defaults(func=_hardware)
