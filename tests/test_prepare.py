"""What every launch needs on disk: the guard module, placed again before each launch."""

from __future__ import annotations

import os
from pathlib import Path

import vllmd.guard
from vllmd.daemon.prepare import install_guard


def test_the_guard_is_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    # given: the guard placed once, and a reader (a vLLM importing it) holding the file open
    folder = install_guard(tmp_path / "run")
    placed = folder / "vllmd" / "guard.py"
    expected = Path(vllmd.guard.__file__).read_bytes()
    with placed.open("rb") as reader:
        first = os.fstat(reader.fileno()).st_ino
        # when: it is placed again (before the next launch)
        assert install_guard(tmp_path / "run") == folder
        # then: a new file took the name; the reader still reads the old one whole
        assert placed.stat().st_ino != first
        assert reader.read() == expected
    assert placed.read_bytes() == expected
    assert sorted(p.name for p in placed.parent.iterdir()) == ["__init__.py", "guard.py"]
