"""Readiness from probe answers (CONTRACT §2.6, §3): scripted answers in, verdicts out."""

from __future__ import annotations

import pytest

from vllmd.core.readiness import FAILURES_TO_WEDGE, Readiness, Seen

# (promise, answers as (ok, time), what each answer changed)
SCRIPTS = [
    ("no answer while loading is just loading", [(False, 1), (False, 2), (False, 3), (False, 4)],
     [Seen.NOTHING_NEW] * 4),
    ("the first good answer makes it ready", [(False, 1), (True, 2), (True, 3)],
     [Seen.NOTHING_NEW, Seen.BECAME_READY, Seen.NOTHING_NEW]),
    ("three failures in a row once ready make it wedged",
     [(True, 1), (False, 2), (False, 3), (False, 4)],
     [Seen.BECAME_READY, Seen.FAILED, Seen.FAILED, Seen.WEDGED]),
    ("a good answer between failures starts the count again",
     [(True, 1), (False, 2), (False, 3), (True, 4), (False, 5), (False, 6)],
     [Seen.BECAME_READY, Seen.FAILED, Seen.FAILED, Seen.NOTHING_NEW, Seen.FAILED, Seen.FAILED]),
    ("wedged is final for that process, whatever it answers later",
     [(True, 1), (False, 2), (False, 3), (False, 4), (True, 5)],
     [Seen.BECAME_READY, Seen.FAILED, Seen.FAILED, Seen.WEDGED, Seen.NOTHING_NEW]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answers", "expected"), [row[1:] for row in SCRIPTS], ids=[row[0] for row in SCRIPTS]
)
def test_probe_answers_walk_the_readiness_states(
    answers: list[tuple[bool, float]], expected: list[Seen]
) -> None:
    readiness = Readiness()
    assert [readiness.observe(ok, float(t)) for ok, t in answers] == expected


def test_wedged_takes_exactly_the_contracts_three_failures() -> None:
    assert FAILURES_TO_WEDGE == 3


def test_ready_since_is_the_time_of_the_first_good_answer() -> None:
    readiness = Readiness()
    readiness.observe(False, 1.0)
    readiness.observe(True, 7.5)
    readiness.observe(True, 9.0)
    assert readiness.ready and readiness.ready_since == 7.5


def test_a_wedged_vllm_is_not_ready() -> None:
    readiness = Readiness()
    for ok, t in [(True, 1.0), (False, 2.0), (False, 3.0), (False, 4.0)]:
        readiness.observe(ok, t)
    assert readiness.wedged and not readiness.ready


# (promise, alive, stopping, wedged, probed)
PROBED = [
    ("a living vLLM is probed", True, False, False, True),
    ("an exited vLLM is not probed", False, False, False, False),
    ("a vLLM being stopped is not probed", True, True, False, False),
    ("a wedged vLLM is not probed (it is being restarted)", True, False, True, False),
]


@pytest.mark.parametrize(
    ("alive", "stopping", "wedged", "probed"),
    [row[1:] for row in PROBED],
    ids=[row[0] for row in PROBED],
)
def test_only_a_living_vllm_nobody_stops_is_probed(
    alive: bool, stopping: bool, wedged: bool, probed: bool
) -> None:
    assert Readiness(wedged=wedged).wants_probe(alive=alive, stopping=stopping) is probed
