"""An update from Start9's ``vllm`` package keeps the API key (issue 17 item 3).

Start9's earlier releases kept the key in ``store.json`` (``apiKey``) and copied it into
``public/credentials.json``; later ones keep it in ``credentials.json`` alone, but a store that
came through the early releases still carries the old field (the SDK's merge keeps unknown keys).
Each layout below is what one release line wrote (``JSON.stringify(data, null, 2)``: two-space
indent, no final newline). Through the real commands (``vllmd run`` as a subprocess, ``vllmd
action get-api-key``), the key dependents hold survives the update, is adopted once, and a later
deletion of ``credentials.json`` still rotates it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from actions_support import run_vllmd
from conftest import Volumes, wait_for

KEY = "q7WbX2mZ9kLpR4tY8vNc3d"
"""A key as Start9's packages made them: 22 characters of ``a-z,A-Z,0-9``."""


def start9_json(value: Any) -> str:
    """What start-sdk's ``FileHelper.json`` writes: ``JSON.stringify(value, null, 2)``."""
    return json.dumps(value, indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class Release:
    """The files one release line of Start9's package left on the volumes."""

    name: str
    store: dict[str, Any]
    credentials: dict[str, Any] | None

    def lay_out(self, volumes: Volumes, serve_args: list[str]) -> None:
        store = {
            k: (serve_args if k == "serveArgs" else v) for k, v in self.store.items()
        }  # the model the release chose, served by the stand-in here
        volumes.data.mkdir(parents=True, exist_ok=True)
        volumes.store.write_text(start9_json(store))
        if self.credentials is not None:
            volumes.public.mkdir(parents=True, exist_ok=True)
            volumes.credentials.write_text(start9_json(self.credentials))


SELECTION = {"selection": "qwen3-30b-a3b", "customArgs": "org/custom --max-model-len 4096"}

RELEASES = [
    # 0.16.0:0.4-beta.0 (and #nvidia:0.20.0:0.4-beta.0), first shape: a selected model, no
    # public volume; vLLM took the key as --api-key from store.json.
    Release("0.16-beta-selectedModel", {"apiKey": KEY, "selectedModel": "org/model"}, None),
    # The same beta after serveArgs replaced selectedModel.
    Release("0.16-beta-serveArgs", {"apiKey": KEY, "serveArgs": []}, None),
    # 0.16.0:0.5-beta.0 to 0.16.0:0.2 (#nvidia:0.20.0:0.1): store.json is the source, copied
    # into credentials.json on every start.
    Release(
        "0.16-synced",
        {"apiKey": KEY, "serveArgs": [], "modelSelection": SELECTION},
        {"apiKey": KEY},
    ),
    # The same, its credentials.json deleted (a rotation the old init would have undone).
    Release(
        "0.16-synced-key-file-gone",
        {"apiKey": KEY, "serveArgs": [], "modelSelection": SELECTION},
        None,
    ),
    # 0.23.1-rc.0 and later: credentials.json is the source, store.json has no key.
    Release(
        "0.23-and-later",
        {
            "serveArgs": [],
            "serveEnv": [{"name": "HF_TOKEN", "value": "hf_secret"}],
            "modelSelection": {**SELECTION, "customEnv": []},
        },
        {"apiKey": KEY},
    ),
    # 0.23 and later on a store that came through 0.16: the old field is still there.
    Release(
        "0.23-with-the-old-field",
        {"apiKey": KEY, "serveArgs": [], "modelSelection": SELECTION},
        {"apiKey": KEY},
    ),
]


def _key_on_disk(volumes: Volumes) -> str | None:
    try:
        key = json.loads(volumes.credentials.read_text())["apiKey"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    return key if isinstance(key, str) else None


def _without_key(store: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in store.items() if k != "apiKey"}


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_an_update_from_start9s_package_keeps_the_key_dependents_hold(
    volumes: Volumes, start_daemon, release: Release
) -> None:
    # given the volumes as the release left them
    release.lay_out(volumes, volumes.standin_args())
    before = json.loads(volumes.store.read_text())
    # when vllmd runs on them
    daemon = start_daemon()
    # then credentials.json holds the same key: no new one
    assert wait_for(lambda: _key_on_disk(volumes)) == KEY
    # and store.json no longer holds it, every other key as it was
    wait_for(lambda: "apiKey" not in json.loads(volumes.store.read_text()), 5, "the field gone")
    assert json.loads(volumes.store.read_text()) == _without_key(before)
    # and their serveArgs run (the selection carried over with them)
    if before.get("serveArgs"):
        assert daemon.wait_starts(1)[0]["argv"][2:5] == volumes.standin_args()[:3]
    # and an adoption is said once, with the key masked
    adopted = [line for line in daemon.stderr().splitlines() if "adopted the API key" in line]
    assert len(adopted) == (release.credentials is None)
    assert KEY not in daemon.output()
    # when the key file is deleted later, then the key rotates (it is not adopted again)
    volumes.credentials.unlink()
    rotated = wait_for(lambda: (k := _key_on_disk(volumes)) and k != KEY and k, 5, "a new key")
    assert len(rotated) == 22


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name)
def test_get_api_key_after_an_update_prints_the_key_dependents_hold(
    volumes: Volumes, release: Release
) -> None:
    release.lay_out(volumes, ["org/model"])
    before = json.loads(volumes.store.read_text())
    flags = (f"--data={volumes.data}", f"--public={volumes.public}", f"--run-dir={volumes.run}")
    done = run_vllmd("action", "get-api-key", *flags)
    assert done.returncode == 0, done.stderr
    assert done.json()["result"]["value"] == KEY
    assert _key_on_disk(volumes) == KEY
    assert json.loads(volumes.store.read_text()) == _without_key(before)
    # adopted once: without the key file, the next call makes a new key
    volumes.credentials.unlink()
    again = run_vllmd("action", "get-api-key", *flags)
    assert again.json()["result"]["value"] != KEY


def test_the_selection_of_start9s_package_reads_as_ours(volumes: Volumes) -> None:
    # given a 0.16 store (the key still in it) with a preset chosen and custom text kept
    release = RELEASES[2]
    release.lay_out(volumes, ["Qwen/Qwen3-30B-A3B", "--max-model-len", "32768"])
    flags = (f"--data={volumes.data}", f"--public={volumes.public}", f"--run-dir={volumes.run}")
    # when the Set Model form reads it
    done = run_vllmd(
        "action", "set-model", "--form", "--tier", "cpu", "--memory-gb", "64", *flags
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # then the selection and the custom text are theirs
    current = done.json()["current"]
    assert current["selection"] == SELECTION["selection"]
    assert current["customArgs"] == SELECTION["customArgs"]


def test_an_invalid_key_in_store_json_is_not_adopted_and_left_alone(volumes: Volumes) -> None:
    volumes.data.mkdir(parents=True)
    volumes.store.write_text(start9_json({"apiKey": "short", "serveArgs": []}))
    flags = (f"--data={volumes.data}", f"--public={volumes.public}", f"--run-dir={volumes.run}")
    done = run_vllmd("action", "get-api-key", *flags)
    assert done.returncode == 0, done.stderr
    key = done.json()["result"]["value"]
    assert key != "short" and len(key) == 22
    assert json.loads(volumes.store.read_text())["apiKey"] == "short"
