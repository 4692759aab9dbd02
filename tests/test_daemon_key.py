"""The API key (CONTRACT §2.2), held to its promises by the real daemon on temporary volumes:
the wiring from a file event to a new key. What happens to the key file at start-up and on an
invalid file is checked in-process (test_daemon_tasks, test_reconciler)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from conftest import Volumes, wait_for


def _valid_key(volumes: Volumes) -> str | None:
    try:
        key = json.loads(volumes.credentials.read_text())["apiKey"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    return key if isinstance(key, str) and len(key) == 22 and key.isalnum() else None


def _remove_tree(path: Path) -> None:
    """``rm -rf path``, again when the daemon wrote a new key into it while it went."""
    for _ in range(50):
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            return
        except OSError:  # "Directory not empty": the daemon's new key came in between
            continue
        return
    raise AssertionError(f"could not remove {path}")


def test_deleted_key_is_regenerated(volumes: Volumes, start_daemon) -> None:
    start_daemon()
    old = wait_for(lambda: _valid_key(volumes))
    volumes.credentials.unlink()
    new = wait_for(lambda: _valid_key(volumes), timeout=5, what="a new key")
    assert new != old


def test_renamed_away_key_is_regenerated(volumes: Volumes, start_daemon) -> None:
    start_daemon()
    old = wait_for(lambda: _valid_key(volumes))
    os.rename(volumes.credentials, volumes.public / "elsewhere.json")
    new = wait_for(lambda: _valid_key(volumes), timeout=5, what="a new key")
    assert new != old


def test_deleted_public_folder_is_recreated_with_a_key(volumes: Volumes, start_daemon) -> None:
    start_daemon()
    old = wait_for(lambda: _valid_key(volumes))
    _remove_tree(volumes.public)
    new = wait_for(lambda: _valid_key(volumes), timeout=5, what="a recreated public folder")
    assert new != old
    # The watch re-armed on the new folder: a second deletion is noticed too.
    volumes.credentials.unlink()  # within less than the 5 s rescan: the watch must see it
    assert wait_for(lambda: (k := _valid_key(volumes)) and k != new and k, timeout=4)


def test_key_never_appears_whole_in_any_output(volumes: Volumes, start_daemon) -> None:
    volumes.set_args(*volumes.standin_args("org/m", "--fake-echo-key"))
    daemon = start_daemon("--auth", "flag")
    daemon.wait_starts(1)
    daemon.wait_health("success")
    volumes.credentials.unlink()  # a second key, logged about as it is written
    daemon.wait_starts(2)
    daemon.wait_health("success")
    daemon.signal(15)
    daemon.wait_exit()
    output = daemon.output()
    assert "api key" in output.lower()  # the stand-in did print it, masked
    for record in volumes.starts():
        key = record["argv"][record["argv"].index("--api-key") + 1]
        assert key not in output
    assert "***" in daemon.stdout() + daemon.stderr()
