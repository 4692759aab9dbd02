"""The compile cache on the data volume (``DATA/cache``): its size, and removing it.

vLLM's ``torch.compile`` artifacts, Inductor's and Triton's kernels, the CUDA driver's PTX cache
and FlashInfer's JIT kernels live there (CONTRACT §1; the variables are in
:mod:`vllmd.core.launch`), so a recreated container starts warm. Removing it frees the space;
the next start of each model compiles again (minutes on GPUs) and fills it anew. The folder is
first renamed out of sight, then removed, and never through a symbolic link.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vllmd.actions.result import ActionError
from vllmd.state.disk import tree_size

TITLE = "Compile cache"
"""How the cache is named in listings (not a HuggingFace id: those have no space)."""
DESCRIPTION = (
    "compiled kernels of vLLM, Inductor, Triton, CUDA and FlashInfer; removing it makes the next "
    "start of each model compile again"
)
TRASH_PREFIX = ".vllmd-deleting-"


def compile_cache_bytes(cache_dir: Path) -> int:
    """The size of ``cache_dir`` in bytes; 0 when it is missing or is not a real folder."""
    if cache_dir.is_symlink() or not cache_dir.is_dir():
        return 0
    return tree_size(cache_dir)


def remove_compile_cache(cache_dir: Path) -> int:
    """Remove ``cache_dir`` (renamed aside first); return the bytes freed."""
    if cache_dir.is_symlink():
        raise ActionError(
            f"{cache_dir} is a symbolic link, not the compile cache; vllmd never deletes through "
            "links. Nothing was deleted; remove the link by hand if you made it"
        )
    if not cache_dir.is_dir():
        raise ActionError(f"there is no compile cache ({cache_dir} does not exist); nothing to do")
    freed = tree_size(cache_dir)
    trash = cache_dir.with_name(f"{TRASH_PREFIX}{cache_dir.name}-{os.getpid()}")
    os.rename(cache_dir, trash)
    shutil.rmtree(trash)
    return freed
