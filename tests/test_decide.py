"""The reconciler's decisions (CONTRACT §2.3, §2.6) as tables: what runs and what is wanted in,
an act out."""

from __future__ import annotations

import pytest

from vllmd.core.decide import (
    COOLDOWN_S,
    QUIET_S,
    Act,
    Decision,
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
