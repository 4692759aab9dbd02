"""Make before break over the real engine (issue 19): one daemon, one chain, the test hub.

The small chat model's files are served by the test hub under two hub ids. vLLM on CPU is
started on the first id: vllmd fetches it, then vLLM loads it offline. Then, while a client
streams from the first, Set Model picks the second id: the first keeps answering while the
second's files come (the hub throttled), and the outage (last answer of the first → first
answer of the second) is measured and printed with the fetch time and the stop-and-load time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from e2e.conftest import FIGURES, START_TIMEOUT_S, Real, http, set_model_custom, stream_chat
from tests.hub import Hub, serving
from vllmd.demo import cpuenv

CHAIN = True
pytestmark = pytest.mark.e2e
STEP_S = 60
LOAD_S = int(START_TIMEOUT_S) + 120

FIRST = "HuggingFaceTB/SmolLM2-135M-Instruct"
SECOND = "vllmd-e2e/SmolLM2-135M-Instruct-copy"
SWITCH_RATE_BPS = 40_000_000
"""The hub's pace while the second model comes: its 540 MB then take about 13 s."""


@pytest.fixture(scope="module")
def hub(cpu_env: cpuenv.CpuEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The chat model's files, linked into two repositories of the test hub."""
    root = tmp_path_factory.mktemp("hub")
    for repo in (FIRST, SECOND):
        folder = root / repo
        folder.mkdir(parents=True)
        for item in Path(cpu_env.chat_model).iterdir():
            (folder / item.name).symlink_to(item)
    with serving(root) as served:
        yield served


@pytest.fixture(scope="module")
def real(real_factory: Any, hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Real:
    # The daemon reaches the hub (the CPU vLLM's own environment is offline: not here).
    home = tmp_path_factory.mktemp("hf-home")
    environ = {**hub.env(), "HF_HOME": str(home), "HF_HUB_OFFLINE": None,
               "TRANSFORMERS_OFFLINE": None}  # fmt: skip
    return real_factory(environ=environ)  # type: ignore[no-any-return]


def hub_args(real: Real, repo: str) -> tuple[str, ...]:
    """The chat model's serve arguments with a hub id in place of its folder."""
    return (repo, *real.env.chat_args[1:])


def served(real: Real, key: str) -> str | None:
    """The model the API answers with now (None while nothing answers)."""
    try:
        answer = http(real.url("/v1/models"), key=key)
    except OSError:
        return None
    return str(answer.json()["data"][0]["id"]) if answer.status == 200 else None


def vllm_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.timeout(LOAD_S)
def test_a_hub_model_is_fetched_by_vllmd_then_loaded_offline(real: Real, hub: Hub) -> None:
    # given no model; when Set Model names a hub id that is not in the cache
    written = time.time()
    set_model_custom(real, hub_args(real, FIRST))
    # then the health shows the download as the loading, then vLLM loads it and answers
    ready = real.wait_ready(since=written)
    assert ready["detail"]["model"] == FIRST
    assert hub.downloads("model.safetensors"), "vllmd fetched the weights from the hub"
    assert "downloading HuggingFaceTB/SmolLM2-135M-Instruct" in real.daemon.stderr()
    # and vLLM ran without the hub
    assert vllm_environ(real.vllm_pid()).get("HF_HUB_OFFLINE") == "1"
    assert served(real, real.key()) == FIRST
    FIGURES["switch e2e: first start (fetch + load)"] = f"{ready['since'] - written:.1f} s"


def _moving(health: dict[str, Any]) -> bool:
    """The health shows a download with bytes still to come (until then nothing is replaced)."""
    fetch = health.get("detail", {}).get("fetch")
    return bool(fetch) and (fetch["total"] is None or fetch["done"] < fetch["total"])


@dataclass
class Watch:
    """Who answers, every 100 ms, and what the health said, while a switch happens."""

    real: Real
    key: str
    answers: list[tuple[float, str | None]] = field(default_factory=list)
    healths: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            self.answers.append((now, served(self.real, self.key)))
            self.healths.append((now, self.real.health()))
            self.stop.wait(0.1)

    def last(self, model: str) -> float:
        return max(t for t, who in self.answers if who == model)

    def first(self, model: str) -> float:
        return min(t for t, who in self.answers if who == model)


@pytest.mark.timeout(LOAD_S)
def test_a_switch_while_a_client_streams_keeps_the_first_model_until_the_second_is_in(
    real: Real, hub: Hub
) -> None:
    # given the first model answering, a client streaming from it, and a throttled hub
    key = real.key()
    hub.rate_bps = SWITCH_RATE_BPS
    watch = Watch(real, key)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    streamed: dict[str, Any] = {}

    def client() -> None:
        try:
            streamed["got"] = stream_chat(real, key, 120, model=FIRST)
        except Exception as exc:  # the assertion below says what went wrong
            streamed["error"] = exc

    streaming = threading.Thread(target=client, daemon=True)
    streaming.start()
    wait_for(lambda: watch.answers and watch.answers[-1][1] == FIRST, 30, "the first answering")
    # when Set Model picks the second hub id
    chosen = time.monotonic()
    set_model_custom(real, hub_args(real, SECOND))
    try:
        wait_for(lambda: any(who == SECOND for _, who in watch.answers), LOAD_S - 30,
                 "the second model answering", interval=0.2)  # fmt: skip
    finally:
        watch.stop.set()
        watcher.join(10)
        streaming.join(60)
    # then the client's stream from the first model was served whole
    assert "error" not in streamed, streamed.get("error")
    got = streamed["got"]
    assert got.finish_reason == "length" and got.completion_tokens == 120
    # and while the second one's files came, the first answered and the health stayed ready,
    # with the download in detail.fetch
    fetching = [(t, h) for t, h in watch.healths if _moving(h)]
    assert fetching, "the health never showed the download"
    assert {(h["result"], h["message"]) for _, h in fetching} == {
        ("success", "The vLLM API is ready")
    }
    sentences = [h["detail"]["fetch"]["message"] for _, h in fetching]
    assert any(s.startswith(f"Downloading {SECOND}: ") and " of " in s for s in sentences)
    last_first, first_second = watch.last(FIRST), watch.first(SECOND)
    replaced = min(t for t, h in watch.healths if h.get("result") == "loading" and t > chosen)
    assert last_first >= replaced - 0.5, "the first model stopped answering before the switch"
    # and the second runs offline
    assert vllm_environ(real.vllm_pid()).get("HF_HUB_OFFLINE") == "1"
    outage = first_second - last_first
    FIGURES["switch e2e: fetch of the second model (Set Model → switch)"] = (
        f"{replaced - chosen:.1f} s at {SWITCH_RATE_BPS / 1e6:.0f} MB/s"
    )
    FIGURES["switch e2e: outage (last answer of the first → first of the second)"] = (
        f"{outage:.1f} s"
    )
    FIGURES["switch e2e: stop + load of the second (health loading → ready)"] = (
        f"{first_second - replaced:.1f} s"
    )
    print(f"switch outage {outage:.1f} s; fetch {replaced - chosen:.1f} s")
