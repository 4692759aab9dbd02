"""The API key (CONTRACT §2.2), held to its promises by the real daemon on temporary volumes."""

from __future__ import annotations

import json
import os
import shutil
import stat

from conftest import Volumes, wait_for


def _valid_key(volumes: Volumes) -> str | None:
    try:
        key = json.loads(volumes.credentials.read_text())["apiKey"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    return key if isinstance(key, str) and len(key) == 22 and key.isalnum() else None


def test_key_is_created_on_start(volumes: Volumes, start_daemon) -> None:
    start_daemon()
    key = wait_for(lambda: _valid_key(volumes), what="a key")
    assert stat.S_IMODE(volumes.credentials.stat().st_mode) == 0o644
    assert len(key) == 22


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
    shutil.rmtree(volumes.public)
    new = wait_for(lambda: _valid_key(volumes), timeout=5, what="a recreated public folder")
    assert new != old
    # The watch re-armed on the new folder: a second deletion is noticed too.
    volumes.credentials.unlink()  # within less than the 5 s rescan: the watch must see it
    assert wait_for(lambda: (k := _valid_key(volumes)) and k != new and k, timeout=4)


def test_invalid_key_file_is_moved_aside_and_replaced(volumes: Volumes, start_daemon) -> None:
    start_daemon()
    wait_for(lambda: _valid_key(volumes))
    volumes.credentials.write_text('{"apiKey": "not-a-valid-key"}')  # in place, not atomic
    wait_for(lambda: _valid_key(volumes), timeout=5, what="a replaced key")
    aside = wait_for(lambda: list(volumes.public.glob("credentials.json.invalid-*")))
    assert aside[0].read_text() == '{"apiKey": "not-a-valid-key"}'


def test_invalid_key_file_at_start_is_moved_aside(volumes: Volumes, start_daemon) -> None:
    volumes.public.mkdir(parents=True)
    volumes.credentials.write_text("{garbage")
    start_daemon()
    assert _valid_key(volumes)
    assert [p.read_text() for p in volumes.public.glob("credentials.json.invalid-*")] == [
        "{garbage"
    ]


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
