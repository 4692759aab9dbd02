"""Which hub repositories vllmd has fetched completely: one small record per repository.

After the fetch worker has every file of a target in the HuggingFace cache (``DATA/models``), it
writes ``DATA/models/.vllmd-fetched/<sha256 of "repo_id@revision">.json`` (revision ``main`` when
none was asked) atomically::

    {"repo": "Org/Name", "revision": null, "commit": "<40 hex>", "files": [["config.json", 712]]}

:func:`is_complete` says whether every target has a record whose files are all in the cache, by
``stat`` alone (no network, no hashing): cheap enough for every reconcile. Removing a model from
the cache (Delete Model Cache) makes it incomplete again, record or not.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from vllmd.core.fetchplan import Target
from vllmd.state.atomicfile import write_atomic
from vllmd.state.readfile import UnreadableFile, read_small_file

__all__ = ["RECORDS_DIR", "Record", "is_complete", "read_record", "snapshot_path", "write_record"]

RECORDS_DIR = ".vllmd-fetched"
MAX_RECORD_BYTES = 4 << 20  # a repository of 50 000 files still fits


class Record(msgspec.Struct, frozen=True):
    """What one complete fetch of a repository left in the cache."""

    repo: str
    revision: str | None
    commit: str
    files: list[tuple[str, int]]


_DECODER = msgspec.json.Decoder(Record)


def record_path(models_dir: Path, target: Target) -> Path:
    """Where the record of ``target`` (repository and asked revision) lives."""
    key = f"{target.repo_id}@{target.revision or 'main'}"
    return models_dir / RECORDS_DIR / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def snapshot_path(models_dir: Path, repo_id: str, commit: str, path: str) -> Path:
    """Where huggingface_hub's cache keeps ``path`` of ``repo_id`` at ``commit``."""
    return models_dir / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit / path


def write_record(
    models_dir: Path, target: Target, commit: str, files: Sequence[tuple[str, int]]
) -> None:
    """Record that every one of ``files`` (path, size) of ``target`` at ``commit`` is cached."""
    record = Record(target.repo_id, target.revision, commit, [(p, s) for p, s in files])
    path = record_path(models_dir, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, msgspec.json.encode(record) + b"\n")


def read_record(models_dir: Path, target: Target) -> Record | None:
    """The record of ``target``; ``None`` when there is none or it cannot be read."""
    try:
        return _DECODER.decode(read_small_file(record_path(models_dir, target), MAX_RECORD_BYTES))
    except (OSError, UnreadableFile, msgspec.DecodeError):
        return None


def _cached(models_dir: Path, record: Record) -> bool:
    for path, size in record.files:
        try:
            # stat follows the snapshot's link into blobs/: a removed blob is a missing file.
            if os.stat(snapshot_path(models_dir, record.repo, record.commit, path)).st_size != size:
                return False
        except OSError:
            return False
    return True


def is_complete(models_dir: Path, targets: Sequence[Target]) -> bool:
    """Whether every one of ``targets`` was fetched completely and is still in the cache."""
    for target in targets:
        record = read_record(models_dir, target)
        if record is None or record.repo != target.repo_id or not _cached(models_dir, record):
            return False
    return True
