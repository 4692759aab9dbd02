"""Sizes of folder trees, counted the way ``du --apparent-size`` would.

The HuggingFace cache links ``snapshots/`` into ``blobs/``: symlinks are never followed and a file
with several hard links is counted once. Walking a 100 GB cache takes a while, so callers in the
event loop run this in a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path


def tree_size(root: Path) -> int:
    """Total apparent size in bytes of the regular files under ``root`` (0 when absent)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        ident = (st.st_dev, st.st_ino)
                        if ident not in seen:
                            seen.add(ident)
                            total += st.st_size
                except FileNotFoundError:
                    continue  # removed while we walked: a download renaming its parts
    return total
