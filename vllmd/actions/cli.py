"""The ``vllmd action …`` and ``vllmd hardware`` subcommands: options, and one way to fail.

Every action prints its result on stdout (StartOS JSON, or ``--text`` for people) and exits 0, or
prints what was wrong, where, and what to do on stderr and exits 1, without a traceback. The
modules that do the work are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from vllmd.core.errors import VllmdError
from vllmd.settings import Settings, add_options

EXIT_OK = 0
EXIT_ERROR = 1

Action = Callable[[argparse.Namespace, Settings], Any]


def _describe_os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return (
        f"{where}{exc.strerror or exc}. Check that the volume is mounted and that vllmd may "
        "read and write it"
    )


def _run(name: str, action: Action, args: argparse.Namespace, settings: Settings) -> int:
    """Run ``action`` and print its result; a user error goes to stderr with exit 1."""
    try:
        result = action(args, settings)
    except VllmdError as exc:
        print(f"vllmd {name}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"vllmd {name}: {_describe_os_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(result.to_text() if args.text else result.to_json())
    return EXIT_OK


def _get_api_key(args: argparse.Namespace, settings: Settings) -> int:
    from vllmd.actions.get_api_key import get_api_key

    return _run("action get-api-key", get_api_key, args, settings)


def _set_model(args: argparse.Namespace, settings: Settings) -> int:
    from vllmd.actions.set_model import set_model

    return _run("action set-model", set_model, args, settings)


def _delete_model_cache(args: argparse.Namespace, settings: Settings) -> int:
    from vllmd.actions.delete_model_cache import delete_model_cache

    return _run("action delete-model-cache", delete_model_cache, args, settings)


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
    env = choose.add_argument_group("environment of the vLLM process (omitted: kept as it is)")
    env.add_argument(
        "--env",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="a variable for vLLM, e.g. HF_TOKEN=… for a gated model; repeat for more; given, "
        "the list replaces the one stored",
    )
    env.add_argument("--clear-env", action="store_true", help="remove every stored variable")
    hw = choose.add_argument_group("hardware (default: detected)")
    hw.add_argument("--tier", metavar="TIER", help="fit to this tier instead of detecting it")
    hw.add_argument("--memory-gb", metavar="N", help="memory per GPU (or of the system) in GB")
    hw.add_argument("--gpus", metavar="K", help="identical GPUs (default 1)")
    choose.add_argument(
        "--force",
        action="store_true",
        help="when store.json is unreadable, move it aside (store.json.invalid-<UTC time>) and "
        "write a new one",
    )
    add_options(choose, ("variant",))
    choose.set_defaults(func=_set_model)

    delete = actions.add_parser(
        "delete-model-cache",
        parents=[volumes, text],
        help="list cached models with their sizes, or delete one with --model",
    )
    delete.add_argument("--model", metavar="ORG/NAME", help="the HuggingFace id to delete")
    delete.add_argument(
        "--force", action="store_true", help="delete the model even when it is the selected one"
    )
    delete.set_defaults(func=_delete_model_cache)

    hardware = sub.add_parser(
        "hardware", parents=[text], help="print the detected hardware tier, GPUs and memory budget"
    )
    add_options(hardware, ("variant",))
    hardware.set_defaults(func=_hardware)
