"""The plan: every file of every target, with its size, from the hub's metadata.

One ``model_info(files_metadata=True)`` per target gives the file list, the sizes, the blob names
and the commit the revision resolves to. A safetensors index is fetched first (a few KiB) when the
selection holds one: vLLM reads only the shards its weight map names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoSibling

from vllmd.core.errors import VllmdError
from vllmd.core.fetchplan import SAFETENSORS_INDEX, PlanFile, Target, select_files, weight_index
from vllmd.fetch.cache import Planned
from vllmd.state.fetched import snapshot_path

__all__ = ["PlanError", "plan_target"]

MAX_INDEX_BYTES = 64 << 20


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
