"""The daemon's side of a fetch: the worker supervised, its events as a FetchState, cancel."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from tests.conftest import group_alive, pid_alive
from tests.fetch_support import add_model, read_files, worker_env
from tests.hub import Hub
from vllmd.core.fetchplan import Target
from vllmd.core.fetchstate import FetchState
from vllmd.process.fetcher import Fetcher
from vllmd.process.logpump import LinePump
from vllmd.process.procgroup import Reaper
from vllmd.process.supervisor import popen_in_group
from vllmd.state.fetched import is_complete

pytestmark = pytest.mark.anyio

MODEL = Target("org/m", None, "model")


class Harness:
    """A Fetcher with its worker's pids, stderr lines and every state it reported."""

    def __init__(self, models: Path, **options: object) -> None:
        self.pids: list[int] = []
        self.stderr: list[str] = []
        self.states: list[FetchState] = []

        def spawn(argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
            proc = popen_in_group(argv, env)
            self.pids.append(proc.pid)
            return proc

        self.fetcher = Fetcher(
            Reaper(reap_orphans=False),
            models,
            lambda: LinePump(lambda _: None, self.stderr.append),
            spawn=spawn,
            margin_bytes=0,
            **options,  # type: ignore[arg-type]
        )

    async def run(self, hub: Hub, home: Path, *targets: Target) -> FetchState:
        with anyio.fail_after(60):
            return await self.fetcher.run(
                targets or (MODEL,), worker_env(hub, home), self.states.append
            )


async def test_a_fetch_reports_its_plan_and_progress_and_ends_complete(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a 32 MiB model on a hub serving 8 MB/s
    files = read_files(add_model(hub, "org/m", shards=1, size=32 << 20))
    hub.rate_bps = 8_000_000
    harness = Harness(tmp_path / "models")
    # When the daemon fetches it
    state = await harness.run(hub, tmp_path)
    # Then the final state is complete, with the total known from the first report on
    total = sum(len(v) for v in files.values())
    assert state == FetchState("org/m", total=total, done=total, rate_bps=state.rate_bps)
    assert state.error is None
    assert all(s.total == total for s in harness.states)
    dones = [s.done for s in harness.states]
    assert dones == sorted(dones) and len(dones) >= 3
    assert max(s.rate_bps for s in harness.states) > 1_000_000
    assert is_complete(tmp_path / "models", [MODEL])
    # And the worker is gone, with its group
    assert not pid_alive(harness.pids[0]) and group_alive(harness.pids[0]) == []


async def test_a_cancelled_fetch_leaves_no_process_keeps_its_bytes_and_resumes(
    hub: Hub, tmp_path: Path
) -> None:
    # Given a slow fetch of one 24 MiB file
    add_model(hub, "org/m", shards=1, size=24 << 20)
    hub.rate_bps = 8_000_000
    harness = Harness(tmp_path / "models")
    # When it is cancelled once 10 MiB are on disk
    with anyio.move_on_after(60) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(harness.run, hub, tmp_path)
            with anyio.fail_after(30):
                while not any(s.done >= 10 << 20 for s in harness.states):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    # Then the worker and its group are gone at once
    pid = harness.pids[0]
    assert not pid_alive(pid) and group_alive(pid) == []
    # And what it had written stays
    blobs = tmp_path / "models" / "models--org--m" / "blobs"
    (partial,) = blobs.glob("*.incomplete")
    kept = partial.stat().st_size
    assert kept >= 10 << 20
    # And the next fetch asks only for the rest, and completes
    hub.rate_bps = None
    state = await harness.run(hub, tmp_path)
    assert state.error is None and state.done == state.total
    last = hub.downloads("model-00001-of-00001.safetensors")[-1]
    assert (last.status, last.range) == (206, f"bytes={kept}-")


async def test_a_failed_fetch_ends_with_its_error(hub: Hub, tmp_path: Path) -> None:
    harness = Harness(tmp_path / "models")
    state = await harness.run(hub, tmp_path, Target("org/none", None, "model"))
    assert state.error is not None and state.error.kind == "not-found"
    assert harness.states[-1] == state
    assert state.model == "org/none"


async def test_a_worker_that_dies_without_a_word_is_an_error(hub: Hub, tmp_path: Path) -> None:
    # Given a "python" that exits at once with status 3, saying nothing
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    harness = Harness(tmp_path / "models", python=str(fake))
    state = await harness.run(hub, tmp_path)
    assert state.error is not None and state.error.kind == "other"
    assert "exited with status 3" in state.error.message


async def test_a_worker_that_cannot_start_is_an_error(hub: Hub, tmp_path: Path) -> None:
    harness = Harness(tmp_path / "models", python=str(tmp_path / "no-such-python"))
    state = await harness.run(hub, tmp_path)
    assert state.error is not None and "Cannot start the fetch worker" in state.error.message
    assert harness.pids == []


async def test_the_workers_stderr_is_passed_through(hub: Hub, tmp_path: Path) -> None:
    # Given a download whose connection drops once (huggingface_hub warns, then resumes)
    add_model(hub, "org/m", shards=1, size=12 << 20)
    hub.drop_once("org/m", "model-00001-of-00001.safetensors", 11 << 20)
    harness = Harness(tmp_path / "models")
    state = await harness.run(hub, tmp_path)
    assert state.error is None
    assert any("resume" in line.lower() for line in harness.stderr)


def test_the_workers_command_line_names_every_target() -> None:
    fetcher = Fetcher(Reaper(reap_orphans=False), Path("/m"), lambda: LinePump(print, print))
    argv = fetcher.argv([MODEL, Target("org/t", "v1", "tokenizer")])
    assert argv[1:] == ["-m", "vllmd.fetch", "--models", "/m", "model:org/m", "tokenizer:org/t@v1"]
