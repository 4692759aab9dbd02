"""The HuggingFace cache as the worker reads it: where each planned file is, and how much of it.

huggingface_hub's layout (``models--ORG--NAME/blobs/<etag>``, linked from
``snapshots/<commit>/<path>``). A file being downloaded is a partial file beside its blob:
``<etag>.incomplete`` for the worker's own resumable HTTP downloads, ``<etag>.<8 hex>.incomplete``
for huggingface_hub's (its Xet downloads: a name unique to the process, never resumed by another,
so left over only by a killed run and removed by :func:`remove_stale_partials`). Counting blobs and
partial files on disk measures a download whichever way its bytes come.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllmd.core.fetchplan import PlanFile, Target
from vllmd.state.fetched import snapshot_path

__all__ = ["Planned", "bytes_on_disk", "is_cached", "partial_path", "remove_stale_partials"]

_HF_PARTIAL = re.compile(r"(?P<etag>[0-9a-f]+)\.[0-9a-f]{8}\.incomplete")


@dataclass(frozen=True, slots=True)
class Planned:
    """One file of the plan with what the worker needs to fetch it: its target and blob name."""

    target: Target
    file: PlanFile
    etag: str


def repo_folder(models_dir: Path, repo_id: str) -> Path:
    """The cache folder of ``repo_id``."""
    return models_dir / f"models--{repo_id.replace('/', '--')}"


def blob_path(models_dir: Path, planned: Planned) -> Path:
    """Where the content of ``planned`` lives once complete."""
    return repo_folder(models_dir, planned.file.repo_id) / "blobs" / planned.etag


def partial_path(models_dir: Path, planned: Planned) -> Path:
    """The worker's resumable partial file for ``planned``."""
    return blob_path(models_dir, planned).with_name(f"{planned.etag}.incomplete")


def is_cached(models_dir: Path, planned: Planned) -> bool:
    """Whether ``planned`` is complete in the snapshot vLLM will read."""
    f = planned.file
    try:
        return os.stat(snapshot_path(models_dir, f.repo_id, f.commit, f.path)).st_size == f.size
    except OSError:
        return False


def _partials(folder: Path) -> dict[str, int]:
    """Bytes in partial files per etag in a ``blobs`` folder."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.endswith(".incomplete"):
                continue
            match = _HF_PARTIAL.fullmatch(entry.name)
            etag = match["etag"] if match else entry.name.removesuffix(".incomplete")
            with contextlib.suppress(OSError):
                found[etag] = found.get(etag, 0) + entry.stat(follow_symlinks=False).st_size
    return found


def bytes_on_disk(models_dir: Path, plan: Sequence[Planned]) -> int:
    """How many bytes of ``plan`` are on disk: complete files whole, partial ones so far."""
    partials: dict[str, dict[str, int]] = {}
    done = 0
    for planned in plan:
        blob = blob_path(models_dir, planned)
        try:
            if os.stat(blob).st_size == planned.file.size:
                done += planned.file.size
                continue
        except OSError:
            pass
        repo = planned.file.repo_id
        if repo not in partials:
            partials[repo] = _partials(blob.parent)
        done += min(partials[repo].get(planned.etag, 0), planned.file.size)
    return done


def remove_stale_partials(models_dir: Path, repos: Iterable[str]) -> None:
    """Remove huggingface_hub's own partial files that a killed run left in ``repos``.

    Its names are unique to the process that wrote them, so no later run resumes them: they only
    take space. Only vllmd writes this cache while it fetches (vLLM launches once the fetch is
    complete, offline), so none of them is in use.
    """
    for repo in set(repos):
        folder = repo_folder(models_dir, repo) / "blobs"
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                if _HF_PARTIAL.fullmatch(entry.name):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
