"""The daemon's tasks in-process (CONTRACT §2.6, §3): the health publisher, the probe loop, the
download sampler and the output pumps, wired to a real Status and Reconciler, on the real clock
with short deadlines."""

from __future__ import annotations

import functools
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_support import World

from vllmd.cli import build_parser
from vllmd.core.health import Phase
from vllmd.daemon.healthfile import HealthPublisher
from vllmd.daemon.probe import StartupHint
from vllmd.daemon.serve import Daemon
from vllmd.daemon.status import Status
from vllmd.daemon.tasks import probe_vllm, publish_health, sample_downloads, vllm_output
from vllmd.settings import Settings, settings_from

pytestmark = pytest.mark.anyio

SHARD_LINE = "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01, 1.5it/s]"


def _health(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


async def _until(condition: Any, timeout: float = 3.0) -> Any:
    """Wait for ``condition()`` to be truthy, checking every few ms, under a deadline."""
    with anyio.fail_after(timeout):
        while not (value := condition()):
            await anyio.sleep(0.005)
    return value


def _settings(tmp_path: Path, grace_s: float = 2_100.0) -> Settings:
    return Settings(data=tmp_path / "data", public=tmp_path / "public",
                    run_dir=tmp_path / "run", loading_grace_s=grace_s)  # fmt: skip


async def test_health_turns_to_failure_when_the_grace_runs_out_without_a_tick(
    tmp_path: Path,
) -> None:
    # Settings from the real command line: the flag is what reaches the verdict.
    argv = ["run", "--data", str(tmp_path / "data"), "--public", str(tmp_path / "public"),
            "--run-dir", str(tmp_path / "run"), "--loading-grace", "0.2"]  # fmt: skip
    settings = settings_from(build_parser().parse_args(argv), environ={})
    settings.run_dir.mkdir(parents=True)
    status = Status()
    publisher = HealthPublisher(settings.health_path, os.getpid())
    status.started("org/m", new_config_at=time.monotonic())
    began = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_health, settings, status, publisher)
        loading = await _until(lambda: _health(settings.health_path))
        assert loading["result"] == "loading"
        failure = await _until(
            lambda: (h := _health(settings.health_path)) and h["result"] == "failure" and h
        )
        took = time.monotonic() - began
        tg.cancel_scope.cancel()
    assert failure["message"].startswith("The vLLM API did not come up within 1 minute.")
    # Woken by the deadline itself: well before a 1 s tick would have looked again.
    assert 0.2 <= took < 0.95  # a 1 s tick would say failure at 1.0 s at the earliest


async def test_progress_while_loading_is_published_as_it_comes(tmp_path: Path) -> None:
    """vLLM's output and the growing cache reach the health file through the pumps and the
    sampler, each waking the publisher (no polling)."""
    settings = _settings(tmp_path)
    settings.run_dir.mkdir(parents=True)
    settings.models_dir.mkdir(parents=True)
    status = Status()
    status.progress.reset(time.monotonic())
    publisher = HealthPublisher(settings.health_path, os.getpid())
    status.started("org/m", new_config_at=time.monotonic())
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_health, settings, status, publisher)
        tg.start_soon(sample_downloads, settings, status, 0.02)
        pump = vllm_output(status, "text").stderr()
        pump.feed(f"{SHARD_LINE}\n".encode())  # what the supervisor's pump does with vLLM's lines
        health = await _until(
            lambda: (h := _health(settings.health_path)) and "shard 2/4" in h["message"] and h
        )
        await _until(lambda: status.progress.meter.downloaded_bytes is not None)  # a baseline
        (tmp_path / "blob").write_bytes(b"x" * 1_000_000)
        os.replace(tmp_path / "blob", settings.models_dir / "blob")  # whole, as a sample sees it
        health = await _until(
            lambda: (h := _health(settings.health_path)) and "Download" in h["message"] and h
        )
        tg.cancel_scope.cancel()
    assert health["result"] == "loading"
    assert health["detail"]["download"]["bytes"] == 1_000_000
    assert health["detail"]["loading"] == "Loading weights: shard 2/4."


@dataclass
class Answer:
    """What the scripted prober says: ``ok`` and a text for the log."""

    ok: bool

    def __str__(self) -> str:
        return "200" if self.ok else "no answer within 5 s"


class ScriptedProber:
    """Answers from a script, then keeps giving the last one."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def check(self) -> Answer:
        self.asked += 1
        ok = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Answer(ok)


async def test_the_probe_makes_vllm_ready_then_reports_it_wedged_after_three_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path, clock=time.monotonic)
    world.select("org/a")
    await world.reconcile()
    first = world.supervisor.child
    prober = ScriptedProber(True, True, False, False, False, True)
    caplog.set_level(logging.INFO)
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe_vllm, prober, 8000, world.reconciler, world.status, 0.001, 0.001)
        await _until(lambda: world.phase is Phase.WEDGED)
        asked = prober.asked
        await world.reconcile()  # what the bell asks for: stop it, restart after the back-off
        assert world.supervisor.stopped == [first]
        await anyio.sleep(0.05)
        assert prober.asked == asked  # not probed while wedged or stopped
        tg.cancel_scope.cancel()
    lines = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("vllmd.daemon", "vLLM is ready on port 8000") in lines
    failed = [m for name, m in lines if name == "vllmd.daemon" and "probe failed" in m]
    assert failed == [
        f"vLLM health probe failed (no answer within 5 s), {n} of 3" for n in (1, 2, 3)
    ]
    assert any("stopped answering its health probe; restarting it" in m for _, m in lines)


class ListeningAfter:
    """A prober whose vLLM listens from ``at`` on (the clock's time); counts the questions."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.asked = 0

    async def check(self) -> Answer:
        self.asked += 1
        return Answer(time.monotonic() >= self.at)


async def test_vllms_startup_line_makes_the_probe_notice_readiness_at_once(
    tmp_path: Path,
) -> None:
    # given a vLLM probed every 10 s while it loads, whose socket listens 20 ms after its line
    world = World(tmp_path, clock=time.monotonic)
    world.select("org/a")
    await world.reconcile()
    hint = StartupHint()
    prober = ListeningAfter(at=float("inf"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                probe_vllm, prober, 8000, world.reconciler, world.status, 10.0, 2.0, hint=hint
            )
        )
        await _until(lambda: prober.asked == 1)  # the first probe: still loading
        # when vLLM says its server is up, a little before it listens
        prober.at = time.monotonic() + 0.02
        vllm_output(world.status, "text", hint=hint).stderr().feed(
            b"INFO:     Application startup complete.\n"
        )
        # then readiness is noticed within moments, not at the next probe 10 s later
        await _until(lambda: world.phase is Phase.READY, timeout=2.0)
        tg.cancel_scope.cancel()
    assert 2 < prober.asked < 200  # asked at once, then every few ms until it listened


async def test_a_startup_line_from_before_this_vllm_started_changes_nothing(
    tmp_path: Path,
) -> None:
    hint = StartupHint()
    hint.feed("INFO:     Application startup complete.")  # the previous vLLM's
    world = World(tmp_path, clock=time.monotonic)
    world.select("org/a")
    await world.reconcile()
    prober = ListeningAfter(at=float("inf"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                probe_vllm, prober, 8000, world.reconciler, world.status, 10.0, 2.0, hint=hint
            )
        )
        await _until(lambda: prober.asked == 1)
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert prober.asked == 1  # no hurried probing for a line that was not this vLLM's


async def test_the_probe_waits_for_a_vllm_to_probe_and_starts_when_one_runs(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, clock=time.monotonic)
    prober = ScriptedProber(True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(probe_vllm, prober, 8000, world.reconciler, world.status, 0.001, 1.0)
        await anyio.sleep(0.02)
        assert prober.asked == 0  # nothing runs: nothing is probed
        world.select("org/a")
        await world.reconcile()
        await _until(lambda: world.phase is Phase.READY)
        tg.cancel_scope.cancel()


async def test_start_up_publishes_a_fresh_health_file_before_anything_else(
    tmp_path: Path,
) -> None:
    """A previous run's verdict is replaced even when the next step (the key) fails."""
    settings = _settings(tmp_path)
    settings.run_dir.mkdir(parents=True)
    settings.health_path.write_text(json.dumps({"result": "success", "pid": 1}))  # a stale run
    settings.public.parent.mkdir(parents=True, exist_ok=True)
    settings.public.write_text("a file where the public folder should be")
    daemon = Daemon(settings)
    daemon.prepare_files()  # the public folder cannot be made: the key step fails
    health = _health(settings.health_path)
    assert health is not None and health["result"] == "loading" and health["pid"] == os.getpid()


async def test_start_up_keeps_an_existing_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    Daemon(settings).prepare_files()
    key = json.loads(settings.credentials_path.read_text())["apiKey"]
    Daemon(settings).prepare_files()  # the next run of the daemon
    assert json.loads(settings.credentials_path.read_text())["apiKey"] == key


async def test_start_up_creates_a_key_readable_by_dependents(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    Daemon(settings).prepare_files()
    key = json.loads(settings.credentials_path.read_text())["apiKey"]
    assert len(key) == 22 and key.isalnum()
    assert stat.S_IMODE(settings.credentials_path.stat().st_mode) == 0o644


async def test_start_up_moves_an_invalid_key_file_aside(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.public.mkdir(parents=True)
    settings.credentials_path.write_text("{garbage")
    Daemon(settings).prepare_files()
    assert len(json.loads(settings.credentials_path.read_text())["apiKey"]) == 22
    aside = list(settings.public.glob("credentials.json.invalid-*"))
    assert [p.read_text() for p in aside] == ["{garbage"]
