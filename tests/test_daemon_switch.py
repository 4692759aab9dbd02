"""Make before break with the real daemon, the fetch worker, the stand-in vLLM and the test hub
(issue 19): the old model answers until the new one's files are in; a failed fetch says why and
leaves it serving; a change of mind cancels; a fetched model starts without the hub."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, Volumes, pid_alive, wait_for

from tests.fetch_support import add_model, mount_tmpfs, unmount
from tests.hub import Hub

READ = ("--fake-read-cache", "config.json,tokenizer.json")
"""The stand-in reads these of its model's snapshot (offline, a missing one crashes it)."""


def fetch_env(hub: Hub, volumes: Volumes, **extra: str) -> dict[str, str]:
    """The daemon fetches, from the test hub, with its own HuggingFace home (no saved token)."""
    return {"VLLMD_FETCH": "true", "HF_HOME": str(volumes.root / "hf"), **hub.env(), **extra}


def served_model(daemon: Daemon) -> str | None:
    """The model the API answers with now (None while nothing answers)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}/v1/models",
        headers={"Authorization": f"Bearer {daemon.volumes.key()}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["data"][0]["id"])
    except OSError:
        return None


def fetch_detail(volumes: Volumes) -> dict[str, Any] | None:
    health = volumes.health_json() or {}
    fetch = health.get("detail", {}).get("fetch")
    return fetch if isinstance(fetch, dict) else None


def worker_pids(daemon: Daemon) -> list[int]:
    return [int(pid) for pid in re.findall(r"\(worker pid (\d+)\)", daemon.stderr())]


@pytest.fixture
def serving_a(hub: Hub, volumes: Volumes, start_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    """org/a fetched from the hub and served (its first start: the fetch ran first)."""
    add_model(hub, "org/a")
    volumes.set_args(*volumes.standin_args("org/a", *READ))
    daemon = start_daemon(env=fetch_env(hub, volumes))
    daemon.wait_health("success", timeout=60)
    yield daemon


def test_the_first_start_fetches_then_loads_and_a_restart_needs_no_hub(
    hub: Hub, volumes: Volumes, start_daemon: Callable[..., Daemon], serving_a: Daemon
) -> None:
    # given org/a started once: fetched from the hub, then launched without it
    (first,) = volumes.starts()
    assert first["env"]["HF_HUB_OFFLINE"] == "1"
    assert hub.downloads("config.json") and served_model(serving_a) == "org/a"
    assert fetch_detail(volumes) is None  # launched: the download has said its piece
    # when the daemon restarts with the hub gone
    serving_a.signal(15)
    assert serving_a.wait_exit() == 0
    hub.stop()
    again = start_daemon(env=fetch_env(hub, volumes))
    # then vLLM starts from the cache, offline, and answers
    again.wait_health("success", timeout=30)
    second = volumes.starts()[1]
    assert second["env"]["HF_HUB_OFFLINE"] == "1" and served_model(again) == "org/a"


def test_a_switch_keeps_the_old_model_answering_until_the_new_one_is_fetched(
    hub: Hub, volumes: Volumes, serving_a: Daemon
) -> None:
    # given org/a serving, and org/b on a slow hub (about 5 s for its 2 MiB)
    add_model(hub, "org/b")
    hub.rate_bps = 400_000
    # when org/b is selected
    volumes.set_args(*volumes.standin_args("org/b", *READ))
    # then, until org/b's vLLM starts, org/a answers and the health is its ready one, with the
    # download in detail.fetch and in the second line of `vllmd health --text`
    answers: list[str | None] = []
    seen: list[tuple[str, str, str]] = []
    deadline = time.monotonic() + 60
    while len(volumes.starts()) < 2:
        assert time.monotonic() < deadline, "org/b never started"
        health = volumes.health_json() or {}
        fetch = health.get("detail", {}).get("fetch")
        # While bytes are still missing, nothing replaces the old model (once they are all in,
        # it is stopped and the health turns to loading: the outage is the load alone).
        if fetch is not None and (fetch["total"] is None or fetch["done"] < fetch["total"]):
            seen.append((health["result"], health["message"], fetch["message"]))
            answers.append(served_model(serving_a))
        time.sleep(0.2)
    assert seen and answers and set(answers) == {"org/a"}
    assert {(result, message) for result, message, _ in seen} == {
        ("success", "The vLLM API is ready")
    }
    moving = [m for *_, m in seen if " of " in m]
    assert moving and moving[-1].startswith("Downloading org/b: ")
    # and org/b then starts offline, and answers
    second = volumes.starts()[1]
    assert second["argv"][2] == "org/b" and second["env"]["HF_HUB_OFFLINE"] == "1"
    wait_for(lambda: served_model(serving_a) == "org/b", 30, "org/b answering")


@pytest.mark.parametrize(
    ("repo", "kinds", "advice"),
    [
        ("org/typo", {"not-found"}, "Check the model id"),
        ("org/gated", {"unauthorized", "gated"}, "HF_TOKEN"),
    ],
    ids=["404: the id", "401: a token"],
)
def test_a_failed_fetch_leaves_the_old_model_serving_and_says_why(
    hub: Hub, volumes: Volumes, serving_a: Daemon, repo: str, kinds: set[str], advice: str
) -> None:
    # given org/a serving; org/typo unknown to the hub, org/gated needing a token
    add_model(hub, "org/gated")
    hub.gate("org/gated", "hf_right")
    # when one of them is selected
    volumes.set_args(*volumes.standin_args(repo, *READ))

    # then the fetch fails, the health stays ready and says why and what to do in detail.fetch
    def failed() -> dict[str, Any] | None:
        fetch = fetch_detail(volumes)
        return fetch if fetch and fetch["error"] else None

    fetch = wait_for(failed, 30, "the failed fetch in the health")
    assert fetch["error"]["kind"] in kinds and advice in fetch["message"]
    health = volumes.health_json()
    assert health is not None and (health["result"], health["message"]) == (
        "success",
        "The vLLM API is ready",
    )
    # and org/a still answers, never stopped
    assert served_model(serving_a) == "org/a" and len(volumes.starts()) == 1


def test_a_change_of_mind_cancels_the_fetch_and_keeps_what_came(
    hub: Hub, volumes: Volumes, serving_a: Daemon
) -> None:
    # given org/a serving and org/b coming slowly
    add_model(hub, "org/b", size=4 << 20)
    hub.rate_bps = 200_000
    volumes.set_args(*volumes.standin_args("org/b", *READ))
    wait_for(lambda: (f := fetch_detail(volumes)) and f["done"] > 0, 30, "bytes of org/b")
    worker = worker_pids(serving_a)[-1]  # the first fetched org/a
    # when the user goes back to org/a
    volumes.set_args(*volumes.standin_args("org/a", *READ))
    # then the worker is gone, the download leaves the health, what came stays on disk
    wait_for(lambda: not pid_alive(worker), 15, "the fetch worker gone")
    wait_for(lambda: fetch_detail(volumes) is None, 15, "the download out of the health")
    partial = list((volumes.data / "models" / "models--org--b").rglob("*"))
    assert any(p.is_file() and p.stat().st_size > 0 for p in partial)
    # and org/a was never stopped
    assert len(volumes.starts()) == 1 and served_model(serving_a) == "org/a"


def test_a_fetched_model_that_misses_a_file_offline_is_relaunched_once_online(
    hub: Hub, volumes: Volumes, start_daemon: Callable[..., Daemon]
) -> None:
    # given a model whose vLLM reads a file that vllmd's plan does not fetch
    add_model(hub, "org/a")
    volumes.set_args(*volumes.standin_args("org/a", "--fake-read-cache", "config.json,extra.bin"))
    daemon = start_daemon(env=fetch_env(hub, volumes))
    # then the offline launch crashes on the missing file, and the next one goes online
    daemon.wait_health("success", timeout=60)
    first, second = volumes.starts()[:2]
    assert first["env"]["HF_HUB_OFFLINE"] == "1"
    assert second["env"].get("HF_HUB_OFFLINE") != "1"
    assert "missed a file in the cache" in daemon.stderr()


@pytest.fixture
def small_models(volumes: Volumes) -> Iterator[Path]:
    """DATA/models on a 1 MiB tmpfs (needs root: skipped otherwise)."""
    folder = volumes.data / "models"
    if not mount_tmpfs(folder, 1 << 20):
        pytest.skip("mounting a tmpfs needs root")
    yield folder
    unmount(folder)


def test_a_model_larger_than_the_free_space_is_refused_before_a_byte_moves(
    hub: Hub, volumes: Volumes, start_daemon: Callable[..., Daemon], small_models: Path
) -> None:
    # given 1 MiB of cache and a model of 4 MiB
    add_model(hub, "org/big", size=2 << 20)
    volumes.set_args(*volumes.standin_args("org/big", *READ))
    daemon = start_daemon(env=fetch_env(hub, volumes))
    # then nothing is downloaded, and the health says what is needed and free, and what to do
    health = daemon.wait_health("failure", timeout=30)
    wait_for(lambda: (f := fetch_detail(volumes)) and f["error"], 30, "the refusal")
    health = volumes.health_json() or {}
    assert "Not enough space to download org/big" in health["message"]
    assert '"Delete Model Cache"' in health["message"]
    assert fetch_detail(volumes)["error"]["kind"] == "disk-full"  # type: ignore[index]
    assert not [r for r in hub.downloads() if r.path.endswith(".safetensors")]
    assert volumes.starts() == []


def test_a_stop_during_a_fetch_leaves_no_worker_behind(
    hub: Hub, volumes: Volumes, start_daemon: Callable[..., Daemon]
) -> None:
    # given a first start whose download is under way on a slow hub
    add_model(hub, "org/slow", size=4 << 20)
    hub.rate_bps = 200_000
    volumes.set_args(*volumes.standin_args("org/slow", *READ))
    daemon = start_daemon(env=fetch_env(hub, volumes))
    wait_for(lambda: (f := fetch_detail(volumes)) and f["done"] > 0, 30, "bytes of org/slow")
    health = volumes.health_json() or {}
    assert health["result"] == "loading" and "Downloading org/slow: " in health["message"]
    (worker,) = worker_pids(daemon)
    # when the daemon is stopped
    daemon.signal(15)
    # then it exits 0 and the worker is gone with it; no vLLM was started
    assert daemon.wait_exit() == 0
    assert not pid_alive(worker) and volumes.starts() == []
