"""Progress measured from the cache on disk, whichever way the bytes come (HTTP or Xet)."""

from __future__ import annotations

from pathlib import Path

from vllmd.core.fetchplan import PlanFile, Target
from vllmd.fetch.cache import Planned, bytes_on_disk, remove_stale_partials

TARGET = Target("org/m", None, "model")


def _planned(path: str, etag: str, size: int) -> Planned:
    return Planned(TARGET, PlanFile("org/m", "c" * 40, path, size), etag)


def test_bytes_on_disk_count_blobs_and_partial_files_of_both_kinds(tmp_path: Path) -> None:
    # Given a complete blob, the worker's own partial file, and huggingface_hub's partial file
    # (its Xet downloads write <etag>.<8 hex>.incomplete), and a file not started
    blobs = tmp_path / "models--org--m" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "aaa").write_bytes(b"x" * 100)
    (blobs / "bbb.incomplete").write_bytes(b"x" * 30)
    (blobs / "ccc.0123abcd.incomplete").write_bytes(b"x" * 40)
    (blobs / "ddd").write_bytes(b"x" * 5)  # a blob of the wrong size: still downloading
    plan = [
        _planned("a", "aaa", 100),
        _planned("b", "bbb", 200),
        _planned("c", "ccc", 300),
        _planned("d", "ddd", 50),
        _planned("e", "eee", 400),
    ]
    # Then each counts what is on disk of it
    assert bytes_on_disk(tmp_path, plan) == 100 + 30 + 40
    # And a partial file larger than its file counts no more than the file
    (blobs / "eee.incomplete").write_bytes(b"x" * 500)
    assert bytes_on_disk(tmp_path, plan) == 100 + 30 + 40 + 400


def test_only_huggingface_hubs_unresumable_partials_are_removed(tmp_path: Path) -> None:
    blobs = tmp_path / "models--org--m" / "blobs"
    blobs.mkdir(parents=True)
    for name in ("aaa", "bbb.incomplete", "ccc.0123abcd.incomplete"):
        (blobs / name).write_bytes(b"x")
    other = tmp_path / "models--org--other" / "blobs"
    other.mkdir(parents=True)
    (other / "ddd.0123abcd.incomplete").write_bytes(b"x")
    remove_stale_partials(tmp_path, ["org/m", "org/absent"])
    assert sorted(p.name for p in blobs.iterdir()) == ["aaa", "bbb.incomplete"]
    assert [p.name for p in other.iterdir()] == ["ddd.0123abcd.incomplete"]
