"""The reconciler's decisions (CONTRACT §2.3, §2.6) as tables: what runs and what is wanted in,
an act out."""

from __future__ import annotations

import pytest

from vllmd.core.decide import (
    COOLDOWN_S,
    QUIET_S,
    Act,
    Decision,
    Fetch,
    Running,
    decide,
    settled_at,
)
from vllmd.core.launch import Launch

A = Launch(("vllm", "serve", "org/a"), ())
B = Launch(("vllm", "serve", "org/b"), ())

# (promise, desired, running, restart_at, expected decision)
RULES = [
    ("no model and nothing runs: idle", None, None, None, Decision(Act.NOTHING)),
    ("no model while vLLM runs: stop it", None, Running(A), None, Decision(Act.STOP)),
    ("no model while a crashed vLLM waits: forget it", None, Running(A, done=True), 9.0,
     Decision(Act.STOP)),
    ("no model while a wedged vLLM runs: stop it", None, Running(A, wedged=True), None,
     Decision(Act.STOP)),
    ("a model and nothing runs: start it", A, None, None, Decision(Act.START)),
    ("what runs is what is wanted: nothing", A, Running(A), None, Decision(Act.NOTHING)),
    ("a changed configuration replaces what runs", B, Running(A), None, Decision(Act.REPLACE)),
    ("a change while the wedged one runs replaces it", B, Running(A, wedged=True), None,
     Decision(Act.REPLACE)),
    ("a change during the crash back-off starts at once, whatever the back-off", B,
     Running(A, done=True), 60.0, Decision(Act.START)),
    ("once the old one is stopped for a change, the new one starts", B, Running(A, done=True),
     None, Decision(Act.START)),
    ("a change undone during the stop starts the same launch again", A, Running(A, done=True),
     None, Decision(Act.START)),
    ("a crashed vLLM restarts when its back-off is over", A, Running(A, done=True), 4.0,
     Decision(Act.RESTART, at=4.0)),
    ("a wedged vLLM whose process lives is stopped", A, Running(A, wedged=True), None,
     Decision(Act.STOP_WEDGED)),
    ("a stopped wedged vLLM restarts after its back-off", A, Running(A, done=True, wedged=True),
     2.0, Decision(Act.RESTART, at=2.0)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("desired", "running", "restart_at", "expected"),
    [row[1:] for row in RULES],
    ids=[row[0] for row in RULES],
)
def test_each_observed_state_gets_the_contracts_decision(
    desired: Launch | None, running: Running | None, restart_at: float | None, expected: Decision
) -> None:
    assert decide(desired, running, restart_at) == expected


READY_A = Running(A, ready=True)

# (promise, desired, running, restart_at, fetch, expected) with B's model not in the cache
FETCH_RULES = [
    ("make before break: a ready old model keeps serving while the new one is fetched", B,
     READY_A, None, None, Decision(Act.FETCH)),
    ("while the fetch runs, the old model keeps serving", B, READY_A, None, Fetch(B),
     Decision(Act.NOTHING)),
    ("with no old model the fetch runs first", B, None, None, None, Decision(Act.FETCH)),
    ("after a crash of the old model the fetch runs first", B, Running(A, done=True), 8.0, None,
     Decision(Act.FETCH)),
    ("an old model still loading is not worth keeping: it is stopped, then the fetch runs", B,
     Running(A), None, None, Decision(Act.REPLACE)),
    ("a wedged old model is stopped, then the fetch runs", B, Running(A, wedged=True), None,
     None, Decision(Act.REPLACE)),
    ("a failed fetch is tried again after its back-off, the old model serving", B, READY_A,
     None, Fetch(B, active=False, retry_at=7.0), Decision(Act.FETCH, at=7.0)),
    ("a failed fetch for another launch does not hold a new one back", B, READY_A, None,
     Fetch(A, active=False, retry_at=7.0), Decision(Act.FETCH)),
    ("the same launch, crashed, is fetched again before it restarts", B, Running(B, done=True),
     2.0, None, Decision(Act.FETCH)),
    ("the launch that serves is left alone though its files left the cache", B,
     Running(B, ready=True), None, None, Decision(Act.NOTHING)),
    ("the launch that serves is still stopped when it wedges", B, Running(B, wedged=True), None,
     None, Decision(Act.STOP_WEDGED)),
]  # fmt: skip

# (promise, desired, running, cached, fetch, expected)
CHANGE_OF_MIND = [
    ("a change of mind mid-fetch cancels the fetch", A, READY_A, True, Fetch(B),
     Decision(Act.CANCEL_FETCH)),
    ("a change to another uncached model cancels the fetch first", B, None, False, Fetch(A),
     Decision(Act.CANCEL_FETCH)),
    ("no model selected mid-fetch cancels the fetch first", None, READY_A, True, Fetch(B),
     Decision(Act.CANCEL_FETCH)),
    ("a failed fetch no longer wanted needs no cancel", None, READY_A, True,
     Fetch(B, active=False, retry_at=3.0), Decision(Act.STOP)),
    ("once complete, the fetched model replaces the old one", B, READY_A, True, None,
     Decision(Act.REPLACE)),
    ("a fetch still finishing does not hold back the switch its files allow", B, READY_A, True,
     Fetch(B), Decision(Act.REPLACE)),
    ("once complete with no old model, the fetched model starts", B, None, True, None,
     Decision(Act.START)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("desired", "running", "restart_at", "fetch", "expected"),
    [row[1:] for row in FETCH_RULES],
    ids=[row[0] for row in FETCH_RULES],
)
def test_an_uncached_model_is_fetched_while_the_old_one_serves(
    desired: Launch,
    running: Running | None,
    restart_at: float | None,
    fetch: Fetch | None,
    expected: Decision,
) -> None:
    assert decide(desired, running, restart_at, cached=False, fetch=fetch) == expected


@pytest.mark.parametrize(
    ("desired", "running", "cached", "fetch", "expected"),
    [row[1:] for row in CHANGE_OF_MIND],
    ids=[row[0] for row in CHANGE_OF_MIND],
)
def test_a_fetch_lasts_only_while_its_launch_is_wanted(
    desired: Launch | None,
    running: Running | None,
    cached: bool,
    fetch: Fetch | None,
    expected: Decision,
) -> None:
    assert decide(desired, running, None, cached=cached, fetch=fetch) == expected


def test_a_restart_is_due_at_its_time_and_not_before() -> None:
    decision = decide(A, Running(A, done=True), restart_at=10.0)
    assert [decision.due(t) for t in (9.99, 10.0, 11.0)] == [False, True, True]


def test_an_act_without_a_time_is_due_now_and_nothing_is_never_due() -> None:
    assert Decision(Act.START).due(0.0)
    assert not Decision(Act.NOTHING).due(1e9)


# (promise, first change, last change, last start, settled at)
SETTLING = [
    ("the first change after a quiet time is acted on at once", 100.0, 100.0, 50.0, 100.0),
    ("exactly the cool-down after a start counts as quiet", 101.0, 101.0, 100.0, 101.0),
    ("a change soon after a start waits for the files to be quiet", 100.2, 100.2, 100.0,
     100.2 + QUIET_S),
    ("every write in the burst pushes the quiet moment back", 100.2, 100.5, 100.0,
     100.5 + QUIET_S),
    ("a writer that never stops holds a change back no longer than the cool-down", 100.2,
     101.19, 100.0, 100.2 + COOLDOWN_S),
    ("changes during a restart (before it started) wait for quiet too", 99.9, 100.01, 100.0,
     100.01 + QUIET_S),
]  # fmt: skip


@pytest.mark.parametrize(
    ("first", "last", "last_start", "expected"),
    [row[1:] for row in SETTLING],
    ids=[row[0] for row in SETTLING],
)
def test_a_burst_of_changes_is_acted_on_once_it_settles(
    first: float, last: float, last_start: float, expected: float
) -> None:
    assert settled_at(first, last, last_start) == pytest.approx(expected)
