"""The /dev/shm check: vLLM needs shared memory, and a small /dev/shm is named with its fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vllmd.core.shm import MIB, SHM_NEEDED_BYTES, shm_warning
from vllmd.hardware.shm import shm_space

# Sizes a container runtime gives /dev/shm: docker's and podman's default, and the usual fixes.
SMALL = [64 * MIB, 1 * MIB, SHM_NEEDED_BYTES - 1]
LARGE = [SHM_NEEDED_BYTES, 4096 * MIB, 64 * 1024 * MIB]


@pytest.mark.parametrize("size", SMALL)
def test_a_dev_shm_smaller_than_vllm_needs_warns_and_names_shm_size(size: int) -> None:
    # Given a /dev/shm below what vLLM asks for, all of it free
    # When the rule is asked
    warning = shm_warning(size, size)
    # Then it warns with the size found, what vLLM needs, vLLM's own words and the flag
    assert warning is not None
    assert f"{size // MIB} MiB" in warning
    assert f"{SHM_NEEDED_BYTES // MIB} MiB" in warning
    assert "Insufficient space in /dev/shm" in warning
    assert "--shm-size=" in warning


@pytest.mark.parametrize("size", LARGE)
def test_a_dev_shm_large_enough_says_nothing(size: int) -> None:
    assert shm_warning(size, size) is None


def test_a_large_dev_shm_that_is_nearly_full_warns_too() -> None:
    warning = shm_warning(4096 * MIB, 10 * MIB)
    assert warning is not None
    assert "10 MiB free of 4096 MiB" in warning
    assert "--shm-size=" in warning


def test_an_unreadable_dev_shm_says_nothing() -> None:
    assert shm_warning(None, None) is None


def test_the_size_is_read_from_the_file_system(tmp_path: Path) -> None:
    # Given a folder on some file system
    stats = os.statvfs(tmp_path)
    # When its space is read
    size, free = shm_space(tmp_path)
    # Then it is that file system's size and free space, in bytes
    assert size == stats.f_blocks * stats.f_frsize
    assert free is not None and 0 <= free <= size


def test_a_missing_folder_reads_as_unknown(tmp_path: Path) -> None:
    assert shm_space(tmp_path / "absent") == (None, None)
