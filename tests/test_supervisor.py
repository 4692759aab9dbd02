"""The supervisor in-process (CONTRACT §2.5): injected group reading, real stand-in processes."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from conftest import STANDIN, free_port, read_records

from vllmd.core.launch import Launch
from vllmd.process.logpump import LinePump
from vllmd.process.proc import group_members
from vllmd.process.procgroup import Reaper
from vllmd.process.supervisor import Child, Output, Supervisor

pytestmark = pytest.mark.anyio


def _launch(tmp_path: Path, *fake: str) -> Launch:
    argv = (sys.executable, str(STANDIN), "serve", "org/m", "--host", "127.0.0.1", "--port",
            str(free_port()), "--fake-record", str(tmp_path / "rec"), *fake)  # fmt: skip
    return Launch(argv, ())


async def _listening(tmp_path: Path) -> None:
    """Wait (with a deadline) until the stand-in has its signal handlers and listens."""
    with anyio.fail_after(10):
        while not any(r.get("event") == "listening" for r in read_records(tmp_path / "rec")):
            await anyio.sleep(0.01)


def _output(lines: list[str]) -> Output:
    return Output(lambda: LinePump(lambda _: None, lines.append),
                  lambda: LinePump(lambda _: None, lines.append))  # fmt: skip


async def test_a_member_that_survives_sigkill_is_reported_and_the_next_start_goes_ahead(
    tmp_path: Path,
) -> None:
    exits: list[Child] = []
    stuck_forever = 4_194_999  # a pid that "never dies": the driver case, injected

    def members(pgid: int) -> list[int]:
        return [*group_members(pgid), stuck_forever]

    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output([]), exits.append,
                                stop_timeout_s=5, kill_wait_s=0.3, members=members)  # fmt: skip
        await supervisor.start(_launch(tmp_path))
        await _listening(tmp_path)
        with anyio.fail_after(10):
            child = await supervisor.stop()
        assert child is not None and child.stuck_pids == (stuck_forever,)
        assert child.returncode == 0 and exits == []  # a requested stop is not a crash
        with anyio.fail_after(10):
            second = await supervisor.start(_launch(tmp_path))
            assert second.alive
            await supervisor.stop()
        tg.cancel_scope.cancel()


async def test_exit_on_its_own_is_reported_with_its_status_and_output(tmp_path: Path) -> None:
    exits: list[Child] = []
    lines: list[str] = []
    done = anyio.Event()

    def on_exit(child: Child) -> None:
        exits.append(child)
        done.set()

    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output(lines), on_exit,
                                stop_timeout_s=5)  # fmt: skip
        await supervisor.start(
            _launch(
                tmp_path,
                "--fake-print",
                "the last words",
                "--fake-crash-after",
                "0",
                "--fake-exit-code",
                "4",
            )
        )
        with anyio.fail_after(10):
            await done.wait()
        tg.cancel_scope.cancel()
    assert exits[0].returncode == 4
    assert "the last words" in lines  # drained before the exit is reported


async def test_a_program_that_cannot_start_is_an_exit_127(tmp_path: Path) -> None:
    exits: list[Child] = []
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output([]), exits.append,
                                stop_timeout_s=5)  # fmt: skip
        child = await supervisor.start(Launch((str(tmp_path / "missing"), "serve"), ()))
        tg.cancel_scope.cancel()
    assert child.returncode == 127 and exits == [child] and child.spawn_error


async def test_an_interrupted_stop_never_sends_a_second_sigterm(tmp_path: Path) -> None:
    escalated = anyio.Event()  # what the daemon's second stop signal sets
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output([]), lambda _: None,
                                stop_timeout_s=60, escalated=escalated)  # fmt: skip
        child = await supervisor.start(_launch(tmp_path, "--fake-ignore-sigterm"))
        await _listening(tmp_path)
        with anyio.move_on_after(0.5):
            await supervisor.stop()  # interrupted: it ignores TERM
        assert child.alive
        escalated.set()
        with anyio.fail_after(10):
            await supervisor.stop()
        tg.cancel_scope.cancel()
    events = [r.get("event") for r in read_records(tmp_path / "rec") if r.get("pid") == child.pid]
    assert events.count("sigterm") <= 1  # the stand-in ignores TERM: it records none, or one
    assert not child.alive and child.returncode == -9


def _draining(tmp_path: Path, drain_s: int, term_delay_s: float) -> Launch:
    """A stand-in that takes ``term_delay_s`` to exit after SIGTERM, launched with a drain."""
    launch = _launch(tmp_path, "--fake-term-delay", str(term_delay_s))
    return Launch((*launch.argv, "--shutdown-timeout", str(drain_s)), ())


async def test_a_planned_stop_counts_the_stop_timeout_from_the_end_of_the_drain(
    tmp_path: Path,
) -> None:
    # given a vLLM that drains for 0.6 s, longer than the 0.3 s stop timeout but within the
    # 1 s drain plus it
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output([]), lambda _: None,
                                stop_timeout_s=0.3)  # fmt: skip
        await supervisor.start(_draining(tmp_path, drain_s=1, term_delay_s=0.6))
        await _listening(tmp_path)
        # when it is stopped as planned
        with anyio.fail_after(10):
            child = await supervisor.stop()
        tg.cancel_scope.cancel()
    # then it finished on its own, not killed at the stop timeout
    assert child is not None and child.returncode == 0
    assert child.grace_s == pytest.approx(1.3)


async def test_a_stop_without_drain_does_not_wait_for_it(tmp_path: Path) -> None:
    # given a vLLM with a 60 s drain that ignores SIGTERM (a wedged one answers nobody)
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output([]), lambda _: None,
                                stop_timeout_s=0.3)  # fmt: skip
        launch = _launch(tmp_path, "--fake-ignore-sigterm")
        await supervisor.start(Launch((*launch.argv, "--shutdown-timeout", "60"), ()))
        await _listening(tmp_path)
        # when it is stopped without the drain; then the group is killed at the stop timeout
        with anyio.fail_after(10):
            child = await supervisor.stop(drain=False)
        tg.cancel_scope.cancel()
    assert child is not None and child.returncode == -9 and child.grace_s == 0.3


async def test_terminate_sends_the_one_sigterm_at_once_and_stop_finishes_it(
    tmp_path: Path,
) -> None:
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output([]), lambda _: None,
                                stop_timeout_s=5)  # fmt: skip
        started = await supervisor.start(_launch(tmp_path))
        await _listening(tmp_path)
        # when the stop is relayed synchronously (the signal task), then awaited
        child = supervisor.terminate()
        assert child is started and child.stopping and child.term_sent_at is not None
        assert supervisor.terminate() is child  # a second call sends nothing more
        with anyio.fail_after(10):
            await supervisor.stop()
        tg.cancel_scope.cancel()
    events = [r.get("event") for r in read_records(tmp_path / "rec") if r.get("pid") == child.pid]
    assert events.count("sigterm") == 1 and child.returncode == 0


async def test_the_main_process_comes_first_and_the_rest_is_looked_up_only_when_asked(
    tmp_path: Path,
) -> None:
    # The probe asks who holds vLLM's listening socket: the main process, nearly always. The rest
    # (a scan of /proc, some milliseconds on the readiness path) waits until it is needed.
    scans: list[int] = []

    def members(pgid: int) -> list[int]:
        scans.append(pgid)
        return group_members(pgid)

    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, Reaper(reap_orphans=False), _output([]), lambda _: None,
                                stop_timeout_s=5, members=members)  # fmt: skip
        child = await supervisor.start(_launch(tmp_path))
        pids = supervisor.processes()
        assert next(pids) == child.pid and scans == []
        assert list(pids) == [] and scans == [child.pid]  # the stand-in is alone in its group
        with anyio.fail_after(10):
            await supervisor.stop()
        tg.cancel_scope.cancel()
