"""The reconciler in-process (CONTRACT §2.2, §2.3, §2.6, §2.7, §3): real files, a scripted fake
supervisor, an injected clock. Every step is one ``await reconcile()``: no subprocess, no sleep."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from conftest import write_json_atomic
from daemon_support import T0, World

from vllmd.core.health import Phase

pytestmark = pytest.mark.anyio


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_no_model_starts_nothing_and_says_no_model(world: World) -> None:
    assert await world.reconcile() is None  # nothing to do until something wakes it
    assert world.supervisor.started == [] and world.phase is Phase.NO_MODEL
    assert world.settings.credentials_path.exists()  # the key is made whatever the store says


async def test_a_selected_model_starts_with_a_new_loading_clock(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    assert world.supervisor.models() == ["org/a"]
    record = world.status.record
    assert record.phase is Phase.STARTING and record.config_started_at == T0
    assert record.model == "org/a" and record.exit is None


async def test_the_same_files_read_again_start_nothing_more(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.clock.advance(10)
    world.select("org/a")  # rewritten with the same content
    await world.reconcile()
    await world.reconcile()  # a rescan
    assert world.supervisor.models() == ["org/a"] and world.supervisor.stopped == []


async def test_the_first_change_stops_the_old_vllm_then_starts_the_new_at_once(
    world: World,
) -> None:
    world.select("org/a")
    await world.reconcile()
    world.probe(True)
    world.clock.advance(10)
    world.select("org/b")
    await world.reconcile()
    first, second = world.supervisor.started
    assert world.supervisor.stopped == [first] and first.stopping
    assert world.supervisor.drained == [True]  # a planned stop lets requests finish
    assert second.launch.model == "org/b"
    assert world.phase is Phase.STARTING
    assert world.status.record.config_started_at == world.clock.now  # a new loading clock


async def test_a_burst_soon_after_a_start_ends_in_one_restart_with_the_last_content(
    world: World,
) -> None:
    world.select("org/m0")
    await world.reconcile()
    for i in range(1, 6):
        world.clock.advance(0.02)  # closer together than the quiet moment
        world.select(f"org/m{i}")
        settled = await world.reconcile()
        assert settled is not None and settled > world.clock.now  # it waits
    assert world.supervisor.models() == ["org/m0"]
    world.clock.now = settled
    assert await world.reconcile() is None
    assert world.supervisor.models() == ["org/m0", "org/m5"]


async def test_a_writer_that_never_stops_waits_no_longer_than_the_cooldown(world: World) -> None:
    world.select("org/m0")
    await world.reconcile()
    first_change = world.clock.now + 0.01
    i = 0
    while world.supervisor.models() == ["org/m0"]:
        i += 1
        world.clock.advance(0.01)
        world.select(f"org/m{i}")
        await world.reconcile()
    # The cool-down after the first change, no more (give or take one 10 ms write).
    assert world.clock.now == pytest.approx(first_change + 1.0, abs=0.011)
    assert world.supervisor.models()[-1] == f"org/m{i}"


async def test_removing_the_model_stops_vllm_and_idles(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.clock.advance(5)
    world.select(None)
    await world.reconcile()
    assert world.supervisor.stopped == world.supervisor.started
    record = world.status.record
    assert record.phase is Phase.NO_MODEL and record.model is None
    assert record.config_started_at is None and record.exit is None
    world.clock.advance(5)
    world.select("org/a")  # the same model again: a new start, not a leftover
    await world.reconcile()
    assert world.supervisor.models() == ["org/a", "org/a"]


async def test_a_crash_restarts_after_the_back_off_counted_from_the_exit(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.clock.advance(3)
    world.supervisor.crash(returncode=7)
    exited_at = world.clock.now
    assert await world.reconcile() == exited_at + 1.0  # "restart at T"
    record = world.status.record
    assert record.phase is Phase.CRASHED
    assert record.exit is not None and record.exit.returncode == 7
    assert record.exit.restart_delay_s == 1.0
    world.clock.advance(0.99)
    await world.reconcile()
    assert len(world.supervisor.started) == 1  # not before its time
    world.clock.advance(0.01)
    await world.reconcile()
    assert len(world.supervisor.started) == 2
    record = world.status.record
    assert record.phase is Phase.STARTING and record.config_started_at == T0  # the clock goes on
    assert record.exit is not None and record.exit.returncode == 7  # shown as the last exit


async def test_crashes_in_a_row_double_the_back_off_up_to_a_minute(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    delays = []
    for _ in range(8):
        world.supervisor.crash()
        restart_at = await world.reconcile()
        assert restart_at is not None
        delays.append(restart_at - world.clock.now)
        world.clock.now = restart_at
        await world.reconcile()
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_a_run_ready_for_ten_minutes_forgets_earlier_crashes(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    for _ in range(3):
        world.supervisor.crash()
        world.clock.now = await world.reconcile() or 0
        await world.reconcile()
    world.probe(True)
    world.clock.advance(600)
    world.supervisor.crash()
    restart_at = await world.reconcile()
    assert restart_at == world.clock.now + 1.0
    assert world.phase is Phase.CRASHED  # a death after ready is a crash like any other


async def test_a_configuration_change_restarts_at_once_whatever_the_back_off(
    world: World,
) -> None:
    world.select("org/a")
    await world.reconcile()
    for _ in range(4):
        world.supervisor.crash()
        world.clock.now = await world.reconcile() or 0
        await world.reconcile()
    world.supervisor.crash()
    assert (await world.reconcile() or 0) - world.clock.now == 16  # a long wait ahead
    world.clock.advance(2)
    world.select("org/b")
    await world.reconcile()
    assert world.supervisor.models()[-1] == "org/b"
    record = world.status.record
    assert record.exit is None and record.config_started_at == world.clock.now
    world.supervisor.crash()
    assert await world.reconcile() == world.clock.now + 1.0  # a clean slate


async def test_a_wedged_vllm_is_stopped_and_restarted_after_the_back_off(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.probe(True)
    assert world.phase is Phase.READY
    world.probe(False, False)
    assert world.phase is Phase.READY  # two failures are not yet a wedge
    world.probe(False)
    assert world.phase is Phase.WEDGED
    first = world.supervisor.child
    restart_at = await world.reconcile()
    assert world.supervisor.stopped == [first]  # stopped in the contract's order
    assert world.supervisor.drained == [False]  # without the drain: it answers nothing
    assert world.phase is Phase.WEDGED and restart_at == world.clock.now + 1.0
    world.clock.now = restart_at
    await world.reconcile()
    assert len(world.supervisor.started) == 2 and world.phase is Phase.STARTING


async def test_answers_about_a_vllm_that_is_gone_or_stopping_change_nothing(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    old = world.supervisor.child
    assert old is not None and world.reconciler.probe_target() is old
    world.clock.advance(5)
    world.select("org/b")
    await world.reconcile()
    world.reconciler.on_probe(old, True)
    assert world.phase is Phase.STARTING  # the old one's answer does not make the new ready
    assert world.reconciler.probe_target() is world.supervisor.child


async def test_a_vllm_being_stopped_or_wedged_is_not_probed(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.probe(True, False, False, False)
    assert world.reconciler.probe_target() is None  # wedged: restarted, not probed
    child = world.supervisor.child
    assert child is not None and child.alive


async def test_a_vllm_that_cannot_start_is_a_crash_that_says_why(world: World) -> None:
    world.supervisor.spawn_error = "[Errno 2] No such file or directory: 'vllm'"
    world.select("org/a")
    restart_at = await world.reconcile()
    record = world.status.record
    assert record.phase is Phase.CRASHED and restart_at == world.clock.now + 1.0
    assert record.exit is not None and record.exit.returncode == 127
    assert record.exit.diagnosis is not None and "vllm" in record.exit.diagnosis.line


async def test_stuck_processes_of_a_crashed_vllm_are_reported(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.supervisor.crash(stuck_pids=(4242,))
    await world.reconcile()
    assert world.status.record.stuck_pids == (4242,)
    world.clock.advance(1)
    await world.reconcile()
    assert world.status.record.stuck_pids == ()  # the next start clears them


async def test_an_invalid_store_keeps_the_last_good_launch_and_the_file(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.select("org/a")
    await world.reconcile()
    for bad in ('{"serveArgs": "org/x"}', "", '{"serveArgs": ["org/x", '):
        world.clock.advance(5)
        world.settings.store_path.write_text(bad)  # in place: also what a reader sees mid-write
        world.bell.file_changed()
        caplog.clear()
        await world.reconcile()
        assert world.settings.store_path.read_text() == bad  # never rewritten or deleted
        problem = world.status.record.store_problem
        assert problem is not None and str(world.settings.store_path) in problem
        assert [r.levelname for r in caplog.records] == ["ERROR"]  # logged, where it is
        assert str(world.settings.store_path) in caplog.records[0].getMessage()
        if bad.startswith('{"serveArgs": "'):
            assert "$.serveArgs" in problem  # the field named
    assert world.supervisor.models() == ["org/a"] and world.supervisor.stopped == []
    world.clock.advance(5)
    world.select("org/fixed")  # the next valid write is picked up
    await world.reconcile()
    assert world.supervisor.models() == ["org/a", "org/fixed"]
    assert world.status.record.store_problem is None


async def test_with_auth_flag_a_new_key_restarts_vllm_with_it(tmp_path: Path) -> None:
    world = World(tmp_path, auth="flag")
    world.select("org/a")
    await world.reconcile()
    old_key = json.loads(world.settings.credentials_path.read_text())["apiKey"]
    world.clock.advance(5)
    world.settings.credentials_path.unlink()
    world.bell.file_changed()
    await world.reconcile()
    new_key = json.loads(world.settings.credentials_path.read_text())["apiKey"]
    first, second = world.supervisor.started
    assert new_key != old_key
    assert old_key in first.launch.argv and new_key in second.launch.argv
    world.bell.file_changed()  # the event of our own write of the new key
    world.clock.advance(5)
    await world.reconcile()  # is not another change
    assert len(world.supervisor.started) == 2


async def test_with_auth_guard_a_new_key_restarts_nothing(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.clock.advance(5)
    world.settings.credentials_path.unlink()
    world.bell.file_changed()
    await world.reconcile()
    assert world.settings.credentials_path.exists()
    assert len(world.supervisor.started) == 1


async def test_a_vanished_key_comes_back_at_once_even_while_a_burst_settles(world: World) -> None:
    world.select("org/a")
    await world.reconcile()
    world.clock.advance(0.1)  # within the cool-down: changes wait for quiet
    world.settings.credentials_path.unlink()
    world.bell.file_changed()
    settled = await world.reconcile()
    assert settled is not None and settled > world.clock.now
    assert world.settings.credentials_path.exists()


async def test_the_loop_wakes_on_a_file_event_and_on_the_rescan(tmp_path: Path) -> None:
    """The loop's wiring, on the real clock: the bell wakes it; with no event the rescan does."""
    import time

    world = World(tmp_path, rescan_s=0.05, clock=time.monotonic)
    async with anyio.create_task_group() as tg:
        await tg.start(world.reconciler.run)
        write_json_atomic(world.settings.store_path, {"serveArgs": ["org/a"]})
        world.bell.file_changed()
        with anyio.fail_after(5):
            while len(world.supervisor.started) < 1:
                await world.status.changed()
        # No event this time: a link target edited elsewhere raises none. The rescan sees it.
        write_json_atomic(world.settings.store_path, {"serveArgs": ["org/b"]})
        with anyio.fail_after(5):
            while len(world.supervisor.started) < 2:
                await world.status.changed()
        tg.cancel_scope.cancel()
    assert world.supervisor.models() == ["org/a", "org/b"]


async def test_an_empty_store_at_start_is_invalid_not_no_model(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.settings.store_path.write_text("")
    await world.reconcile()
    problem = world.status.record.store_problem
    assert problem is not None and "the file is empty" in problem
    assert "the file is empty" in caplog.text
    assert world.settings.store_path.read_text() == ""


async def test_keys_the_daemon_does_not_know_stay_in_the_store(world: World) -> None:
    content = {"serveArgs": ["org/a"], "startos": {"keep": True}}
    write_json_atomic(world.settings.store_path, content)
    await world.reconcile()
    assert world.supervisor.models() == ["org/a"]
    assert json.loads(world.settings.store_path.read_text()) == content


async def test_fixed_flags_in_a_hand_edited_store_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path, auth="flag")
    world.select("org/a", "--port", "1", "--api-key=mine")
    await world.reconcile()
    argv = world.supervisor.started[0].launch.argv
    assert "mine" not in argv and argv[argv.index("--port") + 1] == "8000"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [(r.name, r.getMessage().split(" in ")[0]) for r in warnings] == [
        ("vllmd.daemon.reconcile", "ignoring --port, --api-key")
    ]


async def test_an_invalid_key_file_is_moved_aside_and_replaced(world: World) -> None:
    await world.reconcile()
    world.clock.advance(5)
    world.settings.credentials_path.write_text('{"apiKey": "not-a-valid-key"}')  # in place
    world.bell.file_changed()
    await world.reconcile()
    key = json.loads(world.settings.credentials_path.read_text())["apiKey"]
    assert len(key) == 22 and key.isalnum()
    aside = list(world.settings.public.glob("credentials.json.invalid-*"))
    assert [p.read_text() for p in aside] == ['{"apiKey": "not-a-valid-key"}']
