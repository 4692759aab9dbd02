"""What to fetch before a launch: the hub repositories vLLM would read, and the files it reads.

:func:`targets` reads the ``vllm serve`` arguments the way vLLM 0.32 does for the model, its
tokenizer and a speculative draft model. :func:`select_files` picks, from a repository's file
list, what vLLM 0.32 reads at load (``vllm/model_executor/model_loader/default_loader.py``,
``_prepare_weights``, and ``weight_utils.download_weights_from_hf``):

- the weight format: ``consolidated*.safetensors`` when the repository has such a file (vLLM's
  ``load_format="auto"`` then loads Mistral's own format), else the first of ``*.safetensors``,
  ``*.bin``, ``*.pt`` present at the top level;
- with safetensors and an index (``model.safetensors.index.json``), only the shards its
  ``weight_map`` names (vLLM downloads exactly those: a repository that holds sharded and
  consolidated copies would otherwise be fetched twice);
- weights at the top level only: vLLM globs the snapshot folder without recursion, so weights in
  subfolders (``original/``, ``onnx/``) are never read;
- the small files the config, tokenizer and processor loaders read: top-level ``*.json`` (less the
  index of a weight format not chosen), ``*.txt`` (merges, vocab), ``*.model`` (sentencepiece),
  ``*.tiktoken``, ``*.jinja`` (chat templates), ``*.py`` (remote code).

Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from vllmd.core.launch import flag_values, model_of

__all__ = [
    "SAFETENSORS_INDEX",
    "Plan",
    "PlanFile",
    "Role",
    "Target",
    "parse_target",
    "select_files",
    "target_arg",
    "targets",
    "weight_index",
]

Role = Literal["model", "tokenizer", "draft"]
ROLES: tuple[Role, ...] = ("model", "tokenizer", "draft")

# A hub id as vLLM's resolver accepts one: "name" or "org/name", letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?")

SAFETENSORS_INDEX = "model.safetensors.index.json"
_MISTRAL_INDEX = "consolidated.safetensors.index.json"
_WEIGHT_INDEXES = frozenset(
    {SAFETENSORS_INDEX, _MISTRAL_INDEX, "pytorch_model.bin.index.json", "model.bin.index.json"}
)
_SMALL_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py")


@dataclass(frozen=True, slots=True)
class Target:
    """One hub repository at one revision (``None``: the default branch), and why it is read."""

    repo_id: str
    revision: str | None
    role: Role


@dataclass(frozen=True, slots=True)
class PlanFile:
    """One file of a plan: where it comes from (the resolved commit) and its size in bytes."""

    repo_id: str
    commit: str
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Every file a launch needs from the hub."""

    files: tuple[PlanFile, ...]

    @property
    def total_bytes(self) -> int:
        """The size of the whole plan in bytes."""
        return sum(f.size for f in self.files)


def _is_hub_id(name: str, is_local: Callable[[str], bool]) -> bool:
    if name.startswith(("/", "./", "../", "~")) or name in (".", ".."):
        return False
    if _HUB_ID.fullmatch(name) is None or ".." in name:
        return False
    return not is_local(name)


def _last(args: Sequence[str], flag: str) -> str | None:
    values = flag_values(args, flag)
    return values[-1] if values else None  # argparse keeps the last


def _draft(args: Sequence[str]) -> tuple[str, str | None] | None:
    text = _last(args, "--speculative-config")
    if text is None:
        return None
    try:
        config = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None  # vLLM refuses it with its own message
    if not isinstance(config, dict):
        return None
    model, revision = config.get("model"), config.get("revision")
    if not isinstance(model, str):
        return None  # an n-gram or MTP method names no separate model
    return model, revision if isinstance(revision, str) else None


def targets(serve_args: Sequence[str], is_local: Callable[[str], bool]) -> tuple[Target, ...]:
    """The hub repositories vLLM 0.32 reads for ``serve_args`` (see the module docstring).

    The model (first positional or ``--model``) at ``--revision``; the tokenizer (``--tokenizer``,
    else the model) at ``--tokenizer-revision`` (else the model's revision, as vLLM does) when it
    is another repository or revision; the draft model of ``--speculative-config``. Local paths
    (``is_local`` true, or absolute and relative forms) and names that are not hub ids are left
    out: vLLM handles them as it always has.
    """
    found: list[Target] = []

    def add(name: str | None, revision: str | None, role: Role) -> None:
        if name is None or not _is_hub_id(name, is_local):
            return
        target = Target(name, revision, role)
        if all((t.repo_id, t.revision) != (name, revision) for t in found):
            found.append(target)

    model = model_of(serve_args)
    revision = _last(serve_args, "--revision")
    add(model, revision, "model")
    tokenizer = _last(serve_args, "--tokenizer") or model
    add(tokenizer, _last(serve_args, "--tokenizer-revision") or revision, "tokenizer")
    draft = _draft(serve_args)
    if draft is not None:
        add(draft[0], draft[1], "draft")
    return tuple(found)


def target_arg(target: Target) -> str:
    """``target`` as the worker's command line takes it: ``role:repo_id[@revision]``."""
    at = f"@{target.revision}" if target.revision else ""
    return f"{target.role}:{target.repo_id}{at}"


def parse_target(arg: str) -> Target:
    """The inverse of :func:`target_arg`; ValueError on anything else."""
    role, colon, rest = arg.partition(":")
    repo_id, _, revision = rest.partition("@")
    if not colon or role not in ROLES or _HUB_ID.fullmatch(repo_id) is None:
        raise ValueError(f"not a fetch target (role:org/name[@revision]): {arg!r}")
    return Target(repo_id, revision or None, role)


def weight_index(text: bytes) -> frozenset[str] | None:
    """The shard names a safetensors index's ``weight_map`` names; ``None`` when it names none.

    vLLM falls back to every ``*.safetensors`` file when the map is empty or unreadable.
    """
    try:
        index = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        return None
    names = frozenset(v for v in weight_map.values() if isinstance(v, str))
    return names or None


def _top(paths: Sequence[str], pattern: str) -> list[str]:
    return [p for p in paths if "/" not in p and fnmatch.fnmatchcase(p, pattern)]


def weight_files(paths: Sequence[str], shards: Collection[str] | None = None) -> list[str]:
    """The weight files vLLM 0.32 reads from a repository holding ``paths``, index included.

    ``shards`` is what the safetensors index names (:func:`weight_index`), when the repository
    has one and it was read.
    """
    if any(fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], "consolidated*.safetensors") for p in paths):
        chosen = _top(paths, "consolidated*.safetensors")
        return chosen + ([_MISTRAL_INDEX] if _MISTRAL_INDEX in paths else [])
    for pattern in ("*.safetensors", "*.bin", "*.pt"):
        chosen = _top(paths, pattern)
        if not chosen:
            continue
        if pattern == "*.safetensors" and SAFETENSORS_INDEX in paths:
            if shards is not None:
                chosen = [p for p in chosen if p in shards]
            return [*chosen, SAFETENSORS_INDEX]
        return chosen
    return []


def select_files(
    role: Role, paths: Sequence[str], shards: Collection[str] | None = None
) -> tuple[str, ...]:
    """What vLLM 0.32 reads of a repository holding ``paths``, in the repository's order.

    A tokenizer target takes no weights. ``shards``: see :func:`weight_files`.
    """
    weights = set() if role == "tokenizer" else set(weight_files(paths, shards))
    small = {
        p
        for pattern in _SMALL_FILES
        for p in _top(paths, pattern)
        if p not in _WEIGHT_INDEXES or p in weights
    }
    return tuple(p for p in paths if p in weights or p in small)
