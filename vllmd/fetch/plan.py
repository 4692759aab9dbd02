"""The plan: every file of every target, with its size, from the hub's metadata.

One ``model_info(files_metadata=True)`` per target gives the file list, the sizes, the blob names
and the commit the revision resolves to. A safetensors index is fetched first (a few KiB) when the
selection holds one: vLLM reads only the shards its weight map names.

When the hub cannot be reached, :func:`plan_from_cache` plans from what an earlier download (vLLM's
own, before vllmd fetched, or Start9's package) left in the cache: a model cached before the update
still starts on a host that cannot reach the hub.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoSibling

from vllmd.core.errors import VllmdError
from vllmd.core.fetchplan import (
    SAFETENSORS_INDEX,
    PlanFile,
    Target,
    select_files,
    weight_files,
    weight_index,
)
from vllmd.fetch.cache import Planned, repo_folder
from vllmd.state.fetched import snapshot_path
from vllmd.state.readfile import UnreadableFile, read_small_file

__all__ = ["PlanError", "plan_from_cache", "plan_target"]

MAX_INDEX_BYTES = 64 << 20
_COMMIT = re.compile(r"[0-9a-f]{40}")


class PlanError(VllmdError):
    """Raised when the hub's metadata for a repository lacks what a plan needs (sizes, commit)."""


def _planned(target: Target, commit: str, sibling: RepoSibling) -> Planned:
    size = sibling.lfs.size if sibling.lfs is not None else sibling.size
    etag = sibling.lfs.sha256 if sibling.lfs is not None else sibling.blob_id
    if size is None or etag is None:
        raise PlanError(f"the hub gave no size for {sibling.rfilename} of {target.repo_id}.")
    return Planned(target, PlanFile(target.repo_id, commit, sibling.rfilename, size), etag)


def plan_target(
    api: HfApi, models_dir: Path, target: Target, fetch: Callable[[Path, Planned], None]
) -> tuple[str, list[Planned]]:
    """The commit ``target`` resolves to, and its files that vLLM reads in the repository's order.

    ``fetch`` puts one file into the cache (the index, when the selection holds one).
    """
    info = api.model_info(target.repo_id, revision=target.revision, files_metadata=True)
    if not info.sha or info.siblings is None:
        raise PlanError(f"the hub gave no commit or file list for {target.repo_id}.")
    siblings = {s.rfilename: s for s in info.siblings}
    paths: Sequence[str] = list(siblings)
    chosen = select_files(target.role, paths)
    if SAFETENSORS_INDEX in chosen:
        index = _planned(target, info.sha, siblings[SAFETENSORS_INDEX])
        if index.file.size > MAX_INDEX_BYTES:
            raise PlanError(f"{SAFETENSORS_INDEX} of {target.repo_id} is too large to be one.")
        fetch(models_dir, index)
        text = snapshot_path(models_dir, target.repo_id, info.sha, SAFETENSORS_INDEX).read_bytes()
        chosen = select_files(target.role, paths, weight_index(text))
    return info.sha, [_planned(target, info.sha, siblings[path]) for path in chosen]


def _snapshot_files(snapshot: Path) -> list[str]:
    """Every file below ``snapshot``, as paths relative to it, in a stable order."""
    found: list[str] = []
    for folder, _, names in os.walk(snapshot):
        base = Path(folder).relative_to(snapshot)
        found.extend((base / name).as_posix() for name in names)
    return sorted(found)


def plan_from_cache(models_dir: Path, target: Target) -> tuple[str, list[tuple[str, int]]] | None:
    """The commit and the files (path, size) vLLM reads of ``target``, from the cache alone.

    ``None`` unless the revision resolves in the cache (``refs/<revision>``, or a commit asked by
    its hash) and every file vLLM would read there is present whole: the weights of a model (each
    shard its index names) and no download left half-done in its blobs.
    """
    folder = repo_folder(models_dir, target.repo_id)
    revision = target.revision or "main"
    commit = revision
    if not _COMMIT.fullmatch(revision):
        if ".." in revision.split("/"):
            return None
        try:
            commit = read_small_file(folder / "refs" / revision, 4096).decode().strip()
        except (OSError, UnreadableFile, UnicodeDecodeError):
            return None
        if not _COMMIT.fullmatch(commit):
            return None
    snapshot = folder / "snapshots" / commit
    paths = _snapshot_files(snapshot)
    shards = None
    if SAFETENSORS_INDEX in paths:
        try:
            shards = weight_index(read_small_file(snapshot / SAFETENSORS_INDEX, MAX_INDEX_BYTES))
        except (OSError, UnreadableFile):
            return None
        if shards is not None and not shards <= set(paths):
            return None  # a shard the index names never arrived
    chosen = select_files(target.role, paths, shards)
    if not chosen or (target.role != "tokenizer" and not weight_files(paths, shards)):
        return None
    try:
        blobs = os.listdir(folder / "blobs")
        files = [(path, os.stat(snapshot / path).st_size) for path in chosen]
    except OSError:
        return None  # a snapshot link whose blob is gone
    if any(name.endswith(".incomplete") for name in blobs):
        return None
    return commit, files
