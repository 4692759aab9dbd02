"""Make before break in-process (issue 19): the reconciler with a scripted fetcher, real files, a
scripted supervisor and an injected clock. A model not in the cache is fetched while the old one
serves; only a complete fetch replaces it; a change of mind cancels; a failure is retried."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from conftest import write_json_atomic
from daemon_support import World

from vllmd.core.fetchplan import Target
from vllmd.core.fetchstate import FetchError, FetchState
from vllmd.core.health import READY_MESSAGE, Phase, evaluate
from vllmd.daemon.fetches import Fetches
from vllmd.daemon.reconcile import Reconciler

pytestmark = pytest.mark.anyio

GB = 1_000_000_000


@dataclass(eq=False)
class Call:
    """One run of the fake fetcher, finished (or not) by the test."""

    targets: tuple[Target, ...]
    env: Mapping[str, str]
    on_change: Callable[[FetchState], None]
    result: FetchState | None = None
    finished: anyio.Event = field(default_factory=anyio.Event)
    cancelled: bool = False
    over: anyio.Event = field(default_factory=anyio.Event)

    def finish(self, result: FetchState) -> None:
        self.result = result
        self.finished.set()


class FakeFetcher:
    """Runs until the test finishes the call; records cancellation."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def run(
        self,
        targets: Sequence[Target],
        env: Mapping[str, str],
        on_change: Callable[[FetchState], None],
    ) -> FetchState:
        call = Call(tuple(targets), dict(env), on_change)
        self.calls.append(call)
        try:
            await call.finished.wait()
        except anyio.get_cancelled_exc_class():
            call.cancelled = True
            raise
        finally:
            call.over.set()
        assert call.result is not None
        return call.result


class FetchWorld(World):
    """A World whose reconciler fetches what is not in ``cached`` (repository ids)."""

    def __init__(self, tmp_path: Path, tasks: anyio.abc.TaskGroup) -> None:
        super().__init__(tmp_path)
        self.cached: set[str] = set()
        self.fetcher = FakeFetcher()
        self.fetches = Fetches(
            tasks,
            self.fetcher,
            self.status,
            self.bell.ring,
            lambda targets: all(t.repo_id in self.cached for t in targets),
            clock=self.clock,
        )
        self.reconciler = Reconciler(
            self.settings, self.supervisor, self.status, self.bell,
            base_env={"HF_HUB_OFFLINE": "0"}, clock=self.clock, fetches=self.fetches,
        )  # fmt: skip

    async def reconcile(self) -> float | None:
        """One reconcile, then until the fetch it started (or cancelled) waits on the test."""
        at = await self.reconciler.reconcile()
        await anyio.wait_all_tasks_blocked()
        return at

    def select_env(self, model: str, env: dict[str, str]) -> None:
        serve_env = [{"name": k, "value": v} for k, v in env.items()]
        write_json_atomic(self.settings.store_path, {"serveArgs": [model], "serveEnv": serve_env})
        self.bell.file_changed()

    async def fetched(self, model: str, *, error: FetchError | None = None) -> Call:
        """Finish the last fetch (complete, or failed with ``error``) and let it end."""
        call = self.fetcher.calls[-1]
        if error is None:
            self.cached.add(model)
            call.finish(FetchState(model, total=2 * GB, done=2 * GB))
        else:
            call.finish(FetchState(model, error=error))
        with anyio.fail_after(5):
            await call.over.wait()
            while self.fetches.view is None or self.fetches.view.active:
                await anyio.sleep(0)
        return call

    def verdict(self) -> tuple[str, str]:
        v = evaluate(self.status.snapshot(), self.clock.now, 2_100, 14_400)
        return v.result, v.message


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[FetchWorld]:
    async with anyio.create_task_group() as tasks:
        yield FetchWorld(tmp_path, tasks)
        tasks.cancel_scope.cancel()


async def serving(world: FetchWorld, model: str) -> None:
    world.cached.add(model)
    world.select(model)
    await world.reconcile()
    world.probe(True)
    world.clock.advance(10)


async def test_a_switch_to_an_uncached_model_keeps_the_old_one_serving_until_it_is_fetched(
    world: FetchWorld,
) -> None:
    # given org/a serving, and org/b not in the cache
    await serving(world, "org/a")
    # when org/b is selected
    world.select("org/b")
    await world.reconcile()
    # then org/b is fetched, org/a keeps serving with its exact ready message
    assert [c.targets[0].repo_id for c in world.fetcher.calls] == ["org/b"]
    assert world.supervisor.stopped == [] and world.phase is Phase.READY
    assert world.verdict() == ("success", READY_MESSAGE)
    record = world.status.record
    assert record.fetch is not None and record.fetch.state.model == "org/b"
    # and the fetch's figures show as they come
    world.fetcher.calls[0].on_change(FetchState("org/b", total=2 * GB, done=GB, rate_bps=1e8))
    assert world.status.record.fetch is not None
    assert world.status.record.fetch.state.done == GB
    # when the fetch completes
    await world.fetched("org/b")
    await world.reconcile()
    # then the old one is replaced, and the new one starts without the hub
    old, new = world.supervisor.started
    assert world.supervisor.stopped == [old]
    assert new.launch.model == "org/b" and new.launch.environ["HF_HUB_OFFLINE"] == "1"
    assert world.status.record.fetch is None  # its model is launched


async def test_the_fetch_runs_with_the_launchs_environment_without_the_offline_rule(
    world: FetchWorld,
) -> None:
    world.select_env("org/b", {"HF_TOKEN": "hf_secret", "HF_ENDPOINT": "http://127.0.0.1:9"})
    await world.reconcile()
    env = world.fetcher.calls[0].env
    assert env["HF_TOKEN"] == "hf_secret" and env["HF_ENDPOINT"] == "http://127.0.0.1:9"
    assert env["HF_HUB_CACHE"] == str(world.settings.models_dir)
    assert env["HF_HUB_OFFLINE"] == "0"  # the daemon's own: the rule is for vLLM only


async def test_a_change_of_mind_mid_fetch_cancels_the_fetch(world: FetchWorld) -> None:
    # given org/a serving and org/b being fetched
    await serving(world, "org/a")
    world.select("org/b")
    await world.reconcile()
    # when the user goes back to org/a
    world.clock.advance(5)
    world.select("org/a")
    await world.reconcile()
    # then the fetch is cancelled and forgotten, and org/a was never stopped
    assert world.fetcher.calls[0].cancelled
    assert world.fetches.view is None and world.status.record.fetch is None
    assert world.supervisor.stopped == [] and world.phase is Phase.READY


async def test_a_change_to_another_uncached_model_fetches_that_one_instead(
    world: FetchWorld,
) -> None:
    await serving(world, "org/a")
    world.select("org/b")
    await world.reconcile()
    world.clock.advance(5)
    world.select("org/c")
    await world.reconcile()
    first, second = world.fetcher.calls
    assert first.cancelled and second.targets[0].repo_id == "org/c"
    assert world.phase is Phase.READY


async def test_a_failed_fetch_leaves_the_old_model_serving_and_is_retried_after_its_back_off(
    world: FetchWorld,
) -> None:
    # given org/a serving and a fetch of org/nope that fails (404)
    await serving(world, "org/a")
    world.select("org/nope")
    await world.reconcile()
    await world.fetched("org/nope", error=FetchError("not-found", "404 for org/nope"))
    # when the reconciler looks again
    retry_at = await world.reconcile()
    # then the old model serves, the health says why in detail.fetch, and a retry is due in 1 s
    assert world.supervisor.stopped == [] and world.phase is Phase.READY
    assert world.verdict() == ("success", READY_MESSAGE)
    fetch = world.status.record.fetch
    assert fetch is not None and fetch.state.error is not None and fetch.retry_in_s == 1.0
    assert retry_at == world.clock.now + 1.0
    # and not before its time, then again with a longer back-off after a second failure
    assert len(world.fetcher.calls) == 1
    world.clock.advance(1.0)
    await world.reconcile()
    assert len(world.fetcher.calls) == 2
    await world.fetched("org/nope", error=FetchError("not-found", "404 for org/nope"))
    assert await world.reconcile() == world.clock.now + 2.0


async def test_with_no_old_model_the_fetch_runs_first_and_is_the_loading(
    world: FetchWorld,
) -> None:
    # given nothing runs and org/b is not in the cache
    world.select("org/b")
    await world.reconcile()
    # then nothing starts; the health is loading, with the download sentence
    assert world.supervisor.started == []
    assert world.phase is Phase.STARTING and world.status.record.model == "org/b"
    world.fetcher.calls[0].on_change(FetchState("org/b", total=2 * GB, done=GB, rate_bps=1e8))
    result, message = world.verdict()
    assert result == "loading"
    assert message.endswith("Downloading org/b: 1.0 of 2.0 GB (50 %), 100 MB/s, less than a "
                            "minute left.")  # fmt: skip
    # when it completes, vLLM starts offline
    await world.fetched("org/b")
    await world.reconcile()
    (child,) = world.supervisor.started
    assert child.launch.environ["HF_HUB_OFFLINE"] == "1"


async def test_a_failed_fetch_with_no_old_model_is_a_failure_that_says_what_to_do(
    world: FetchWorld,
) -> None:
    world.select("org/gated")
    await world.reconcile()
    await world.fetched("org/gated", error=FetchError("unauthorized", "401 Unauthorized"))
    await world.reconcile()
    result, message = world.verdict()
    assert result == "failure" and "--env HF_TOKEN=" in message
    assert world.supervisor.started == []


async def test_the_old_model_that_crashes_during_the_fetch_is_not_restarted(
    world: FetchWorld,
) -> None:
    await serving(world, "org/a")
    world.select("org/b")
    await world.reconcile()
    world.supervisor.crash(returncode=1)
    await world.reconcile()
    world.clock.advance(120)
    await world.reconcile()
    assert len(world.supervisor.started) == 1  # org/a is not what the files want
    assert world.phase is Phase.STARTING and world.status.record.model == "org/b"
    assert world.verdict()[0] == "loading"


async def test_an_old_model_still_loading_is_stopped_and_the_fetch_runs_first(
    world: FetchWorld,
) -> None:
    world.cached.add("org/a")
    world.select("org/a")
    await world.reconcile()  # started, never ready
    world.clock.advance(5)
    world.select("org/b")
    await world.reconcile()
    assert world.supervisor.stopped == world.supervisor.started
    assert len(world.fetcher.calls) == 1 and world.phase is Phase.STARTING


async def test_a_fetched_model_that_misses_a_file_offline_is_relaunched_once_online(
    world: FetchWorld,
) -> None:
    # given org/a fetched and started offline, then crashing for a file not in the cache
    world.cached.add("org/a")
    world.select("org/a")
    await world.reconcile()
    (first,) = world.supervisor.started
    assert first.launch.environ["HF_HUB_OFFLINE"] == "1"
    world.status.tail.feed(
        b"huggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in "
        b"the disk cache and outgoing traffic has been disabled.\n"
    )
    world.supervisor.crash(returncode=1)
    restart_at = await world.reconcile()
    # when its back-off is over
    assert restart_at is not None
    world.clock.now = restart_at
    await world.reconcile()
    # then it starts with the hub reachable (the daemon's own value), the same configuration
    second = world.supervisor.started[1]
    assert second.launch == first.launch
    assert second.launch.environ["HF_HUB_OFFLINE"] == "0"
    # and a crash of another kind keeps it online (once was enough), with no fetch
    world.status.tail.feed(b"torch.OutOfMemoryError: CUDA out of memory.\n")
    world.supervisor.crash(returncode=1)
    world.clock.now = await world.reconcile() or world.clock.now
    await world.reconcile()
    assert world.supervisor.started[2].launch.environ["HF_HUB_OFFLINE"] == "0"
    assert world.fetcher.calls == []


async def test_a_model_deleted_from_the_cache_while_it_serves_is_left_serving(
    world: FetchWorld,
) -> None:
    await serving(world, "org/a")
    world.cached.discard("org/a")
    await world.reconcile()
    assert world.fetcher.calls == [] and world.supervisor.stopped == []


async def test_a_moving_fetch_shows_at_most_every_second_and_its_plan_and_error_at_once(
    world: FetchWorld,
) -> None:
    # given a fetch under way
    world.select("org/b")
    await world.reconcile()
    report = world.fetcher.calls[0].on_change
    shown: list[object] = []

    def note() -> None:
        shown.append(world.status.record.fetch)

    # when its plan comes, then progress every 0.25 s for 2 s
    report(FetchState("org/b", total=2 * GB, done=0))
    note()
    for i in range(1, 9):
        world.clock.advance(0.25)
        report(FetchState("org/b", total=2 * GB, done=i * 100_000_000, rate_bps=4e8))
        note()
    # then the plan showed at once, and the figures changed no more than once a second
    fetch = world.status.record.fetch
    assert fetch is not None and fetch.state.done == 800_000_000
    assert len({id(f) for f in shown}) == 3  # the plan, then at 1 s and at 2 s
    assert fetch.moved_at == world.clock.now  # movement noted at every report
