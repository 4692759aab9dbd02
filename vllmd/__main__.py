"""``python -m vllmd`` and the ``vllmd`` command.

Two commands are served before the command line is built, each importing only what it needs:
``run`` writes its first health file and, when there is none, the API key before anything else is
imported (:mod:`vllmd.early`), so dependents and StartOS see them within milliseconds of the start;
``health``, which StartOS runs about once a second while a model loads, answers without argparse,
settings or logging (:mod:`vllmd.daemon.healthcheck`). Anything else, and any doubt about their
arguments, goes to :mod:`vllmd.cli`.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    """The ``vllmd`` command: the fast paths of ``run`` and ``health``, then the command line."""
    argv = sys.argv[1:]
    early = None
    if argv[:1] == ["health"]:
        from vllmd.daemon.healthcheck import main as health_main

        code = health_main(argv[1:], os.environ)
        if code is not None:
            return code
    elif argv[:1] == ["run"]:
        from vllmd.early import early_start

        early = early_start(argv, os.environ)
    from vllmd.cli import main as cli_main

    return cli_main(early=early)


if __name__ == "__main__":
    sys.exit(main())
