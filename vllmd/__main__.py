"""``python -m vllmd`` and the ``vllmd`` command.

``run`` writes its first health file and, when there is none, the API key before anything else is
imported (:mod:`vllmd.early`): dependents and StartOS see them within milliseconds of the start.
"""

from __future__ import annotations

import os
import sys

from vllmd.early import early_start


def main() -> int:
    """The ``vllmd`` command: the early files for ``run``, then the command line proper."""
    early = early_start(sys.argv[1:], os.environ)
    from vllmd.cli import main as cli_main

    return cli_main(early=early)


if __name__ == "__main__":
    sys.exit(main())
