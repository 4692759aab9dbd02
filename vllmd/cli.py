"""The ``vllmd`` command: ``run``, ``health``, ``action``, ``hardware``, ``demo``.

Each subcommand's handler is imported only when it runs, so that the actions start without
loading the daemon's dependencies. ``vllmd health`` in its plain forms is answered before this
module is imported (``vllmd.__main__``); here it gets help, errors and the odd forms.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from vllmd import __version__
from vllmd.settings import (
    DEMO_DEFAULTS,
    DEMO_OPTIONS,
    RUN_OPTIONS,
    VOLUME_OPTIONS,
    Settings,
    SettingsError,
    add_options,
    settings_from,
)

if TYPE_CHECKING:
    from vllmd.early import Early

EXIT_USAGE = 2
"""A flag or environment variable held a value that cannot be used (argparse's own code)."""

Handler = Callable[[argparse.Namespace, Settings], int]


def _run(args: argparse.Namespace, settings: Settings, *, early: Early | None) -> int:
    import logging
    import os

    from vllmd.daemon.serve import run

    code = run(settings, early)
    # vLLM is stopped and our files are written: skip the interpreter's own teardown, which
    # takes longer than the whole stop (tens of milliseconds that a container stop waits for).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _health(args: argparse.Namespace, settings: Settings) -> int:
    from vllmd.daemon.healthcheck import health_command

    return health_command(args, settings)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from vllmd.demo.demo import demo_command
    except ModuleNotFoundError as exc:
        # The images leave the demo tooling out: they already hold vLLM, and the demo would
        # pip-install gigabytes next to it.
        if not (exc.name or "").startswith("vllmd.demo"):
            raise
        print(
            "vllmd demo: the demo tooling is not installed here (the container images leave it "
            "out; they already run vLLM). Run `vllmd demo` from a checkout of the repository.",
            file=sys.stderr,
        )
        return 1
    return demo_command(args, settings)


def build_parser(early: Early | None = None) -> argparse.ArgumentParser:
    """The argument parser for every subcommand; ``run`` takes over ``early``'s record."""
    parser = argparse.ArgumentParser(
        prog="vllmd", description="Run the vLLM server as an appliance."
    )
    parser.add_argument("--version", action="version", version=f"vllmd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    volumes = argparse.ArgumentParser(add_help=False)
    add_options(volumes, VOLUME_OPTIONS)

    run = sub.add_parser("run", parents=[volumes], help="run the daemon (PID 1 in the image)")
    add_options(run, RUN_OPTIONS)
    run.set_defaults(func=partial(_run, early=early))

    health = sub.add_parser(
        "health", parents=[volumes], help="print the daemon's health; exit 0 success, 1 not, 2 none"
    )
    health.add_argument("--text", action="store_true", help="print 'result: message' instead")
    health.set_defaults(func=_health)

    demo = sub.add_parser(
        "demo", help="bring up a real small chat model on this machine's CPU, under ./.vllmd/"
    )
    add_options(demo, DEMO_OPTIONS, DEMO_DEFAULTS)
    demo.set_defaults(func=_demo)

    from vllmd.actions.cli import register

    register(sub, volumes)
    return parser


def main(argv: Sequence[str] | None = None, *, early: Early | None = None) -> int:
    """Parse ``argv``, build the settings once, and run the chosen subcommand.

    ``early`` is what ``run``'s first milliseconds did (:func:`vllmd.early.early_start`).
    """
    parser = build_parser(early)
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"vllmd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from vllmd.logs import setup_logging

    setup_logging(settings.log_format)
    handler: Handler = args.func
    return handler(args, settings)
