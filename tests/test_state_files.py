"""State files (CONTRACT §1): schemas, atomic writes, unknown keys kept, bad keys moved aside."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from vllmd.apikey import KEY_LENGTH, new_key
from vllmd.core.masking import MASK, Masker, redact
from vllmd.state.atomicfile import create_atomic, write_atomic
from vllmd.state.credentials import ensure_key, read_key
from vllmd.state.store import StoreError, read_store, remove_field, update_store


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    write_atomic(target, b"new", mode=0o644)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_atomic_write_mode_is_not_narrowed_by_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "f", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644


def test_create_atomic_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert create_atomic(target, b"first")
    assert not create_atomic(target, b"second")
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_new_keys_are_22_alphanumerics_and_differ() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == KEY_LENGTH and k.isalnum() and k.isascii() for k in keys)


def test_missing_credentials_are_created_pretty_and_readable_by_dependents(tmp_path: Path) -> None:
    path = tmp_path / "public" / "credentials.json"
    state = ensure_key(path)
    assert state.created
    text = path.read_text()
    assert json.loads(text) == {"apiKey": state.key}
    assert "\n  " in text  # pretty-printed
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_existing_valid_key_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    key = new_key()
    path.write_text(json.dumps({"apiKey": key}))
    state = ensure_key(path)
    assert (state.key, state.created, state.moved_aside) == (key, False, None)


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"apiKey": 5}', '{"apiKey": "short"}', '{"apiKey": "' + "é" * 22 + '"}',
     '{"other": 1}'],
)  # fmt: skip
def test_invalid_credentials_are_moved_aside_not_deleted(tmp_path: Path, content: str) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(content)
    state = ensure_key(path)
    assert state.created and state.moved_aside is not None
    assert state.moved_aside.name.startswith("credentials.json.invalid-")
    assert state.moved_aside.read_text() == content
    assert read_key(path) == state.key


def test_credentials_error_names_the_field_without_the_value(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text('{"apiKey": "abcdefghijklmnopqrstuvwxyz"}')  # 26 characters
    state = ensure_key(path)
    assert state.problem is not None
    assert "$.apiKey" in state.problem and str(path) in state.problem
    assert "abcdefghijklmnopqrstuvwxyz" not in state.problem


def test_store_unknown_keys_are_kept_on_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    path.write_text(json.dumps({"serveArgs": ["a"], "startos": {"x": [1, 2]}, "n": 3}))
    update_store(path, {"serveArgs": ["b"]})
    assert json.loads(path.read_text()) == {"serveArgs": ["b"], "startos": {"x": [1, 2]}, "n": 3}


def test_store_missing_file_is_no_model(tmp_path: Path) -> None:
    assert read_store(tmp_path / "store.json") is None


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("", "empty"),
        ('{"serveArgs": ', "truncated"),
        ('{"serveArgs": "m"}', "$.serveArgs"),
        ('{"serveArgs": ["m", 1]}', "$.serveArgs[1]"),
        ('{"serveEnv": [{"name": "1BAD", "value": "v"}]}', "$.serveEnv[0].name"),
        ('{"serveEnv": [{"name": "OK", "value": 1}]}', "$.serveEnv[0].value"),
        ("[]", "object"),
    ],
)
def test_bad_store_errors_name_file_and_field(tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "store.json"
    path.write_text(content)
    with pytest.raises(StoreError) as info:
        read_store(path)
    assert str(path) in str(info.value) and where in str(info.value)


@pytest.mark.parametrize("content", ["", "{", "[]", '{"serveArgs": "m"}'])
def test_bad_store_error_keeps_the_problem_and_the_hint_apart(tmp_path: Path, content: str) -> None:
    # Given a store.json that cannot be used
    path = tmp_path / "store.json"
    path.write_text(content)
    # When it is read
    with pytest.raises(StoreError) as info:
        read_store(path)
    # Then the problem names the file without the advice, and the text joins both
    error = info.value
    assert str(path) in error.problem and "Set Model" not in error.problem
    assert "Set Model" in error.hint
    assert str(error) == f"{error.problem} {error.hint}"


def test_bad_store_error_never_echoes_an_env_value(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    path.write_text('{"serveEnv": [{"name": "HF TOKEN", "value": "hf_s3cr3t"}]}')
    with pytest.raises(StoreError) as info:
        read_store(path)
    assert "hf_s3cr3t" not in str(info.value)


def test_masker_masks_every_known_key_and_redact_shows_a_prefix_only() -> None:
    masker = Masker()
    one, two = new_key(), new_key()
    masker.add(one)
    masker.add(two)
    assert masker.mask(f"a {one} b {two}") == f"a {MASK} b {MASK}"
    assert masker.mask_bytes(f"{one}".encode()) == MASK.encode()
    assert redact(one) == one[:4] + "…"


def test_a_folder_named_credentials_json_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    (path / "inside").mkdir(parents=True)
    state = ensure_key(path)
    assert state.created and state.moved_aside is not None and state.moved_aside.is_dir()
    assert read_key(path) == state.key


def test_removing_a_store_field_keeps_every_other_key_as_written(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    path.write_text('{"apiKey": "x", "serveArgs": ["m"], "mine": {"deep": [1.50, "\\u00e9"]}}')
    assert remove_field(path, "apiKey") is True
    assert json.loads(path.read_text()) == {"serveArgs": ["m"], "mine": {"deep": [1.5, "é"]}}
    assert "1.50" in path.read_text() and "\\u00e9" in path.read_text()  # values as written
    assert remove_field(path, "apiKey") is False  # nothing left to remove
    assert remove_field(tmp_path / "absent.json", "apiKey") is False


def test_an_atomic_write_that_is_no_longer_wanted_leaves_the_file_and_no_temporary(
    tmp_path: Path,
) -> None:
    # given a file another writer replaced while ours was being written
    path = tmp_path / "store.json"
    path.write_text("theirs")
    # when the write is asked, just before its rename, whether the file is still the one read
    replaced = write_atomic(path, b"ours", still=lambda: False)
    # then theirs stays, and nothing of ours is left beside it
    assert replaced is False and path.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["store.json"]
    assert write_atomic(path, b"ours", still=lambda: True) is True and path.read_text() == "ours"
