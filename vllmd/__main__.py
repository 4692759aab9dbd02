"""``python -m vllmd``: the same as the ``vllmd`` command."""

from __future__ import annotations

import sys

from vllmd.cli import main

if __name__ == "__main__":
    sys.exit(main())
