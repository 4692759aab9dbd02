"""Prepare the CPU vLLM for the end-to-end tests: ``python tests/e2e/prepare.py [--cache DIR]``.

Idempotent: it returns in a moment when the cache is ready. Exits 1 with the failing step and the
tail of its output when preparing fails, so CI stops loudly instead of skipping the tier.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vllmd.demo import cpuenv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"cache folder (default ${cpuenv.CACHE_ENV} or {cpuenv.default_cache_root()})",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        env = cpuenv.prepare(args.cache, log=lambda line: print(line, flush=True))
    except cpuenv.PrepareError as exc:
        print(f"error: preparing the CPU vLLM failed: {exc}", file=sys.stderr)
        return 1
    print(f"ready in {time.monotonic() - started:.0f} s")
    print(f"vllm:        {env.vllm}")
    print(f"python:      {env.python}")
    print(f"chat model:  {env.chat_model}")
    print(f"embed model: {env.embed_model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
